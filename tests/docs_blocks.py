"""The code blocks of the markdown docs, read the way tests/docs/test_blocks_run.py runs them
(no tests here; no torch).

* ``extract_blocks(text, name)``: every fenced block (also fences indented inside
  list items), its language, the line of its opening fence and its commands.
* Shell blocks (```bash / sh / shell): one ``Command`` per command, continuation
  lines (``\\`` at the end) joined, comment lines dropped.
* Console blocks (```console): one ``Command`` per ``$ `` prompt (with its
  continuation lines) and the lines shown after it as its expected ``output``.
* ``split_and``, ``strip_comment``: the pieces of one command line, quotes respected.
* ``output_mismatch(expected, actual)``: compares the SHAPE of a command's output with
  the listing in the docs: numbers, hex addresses, class names and absolute paths are
  abstracted, the package logger's prefix is dropped, ``...`` matches anything, a JSON
  document is compared by its keys and list lengths, and the expected lines must appear
  in order (other lines may be interleaved: library warnings are left out of the listings).
"""

import json
import re
from dataclasses import dataclass, field
from typing import Iterable, List, Optional, Sequence, Tuple

#: fence info string -> kind of block the tests run
RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "console": "console", "python": "python", "py": "python"}

FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`\s]*)[^`]*$")


@dataclass
class Command:
    line: int  # line of the markdown file where the command starts
    text: str  # continuation lines joined into one line
    output: List[str] = field(default_factory=list)  # console blocks: the lines shown after the command


@dataclass
class Block:
    path: str  # markdown file, relative to the repository
    line: int  # line of the opening fence (1-based)
    lang: str  # fence info string ("" for a plain block)
    text: str  # content, dedented for fences inside list items
    commands: List[Command] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def kind(self) -> Optional[str]:
        return RUNNABLE.get(self.lang)

    @property
    def first_line(self) -> str:
        return next((line.strip() for line in self.text.splitlines() if line.strip()), "")


def extract_blocks(text: str, name: str) -> List[Block]:
    """Every fenced code block of the markdown ``text`` (file ``name``), in order."""
    blocks: List[Block] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        body: List[str] = []
        j = i + 1
        while j < len(lines):
            closing = re.match(r"^[ \t]*(`{3,}|~{3,})[ \t]*$", lines[j])
            if closing and closing.group(1)[0] == fence[0] and len(closing.group(1)) >= len(fence):
                break
            body.append(_dedent(lines[j], indent))
            j += 1
        block = Block(name, i + 1, opening["info"].lower(), "\n".join(body) + "\n")
        if block.kind == "shell":
            block.commands = shell_commands(body, i + 2)
        elif block.kind == "console":
            block.commands = console_commands(body, i + 2)
        blocks.append(block)
        i = j + 1
    return blocks


def _dedent(line: str, indent: int) -> str:
    strip = len(line) - len(line.lstrip(" \t"))
    return line[min(strip, indent):]


def shell_commands(lines: Sequence[str], first_line: int) -> List[Command]:
    """The commands of a shell block whose first line is ``first_line`` of the file."""
    commands: List[Command] = []
    pending: Optional[Command] = None
    for offset, line in enumerate(lines):
        if pending is None:
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            pending = Command(first_line + offset, "")
        if line.rstrip().endswith("\\"):
            pending.text += line.strip()[:-1].rstrip() + " "
            continue
        pending.text = (pending.text + line.strip()).strip()
        commands.append(pending)
        pending = None
    if pending is not None:
        raise ValueError(f"line {pending.line}: the last command ends with a continuation backslash")
    return commands


def console_commands(lines: Sequence[str], first_line: int) -> List[Command]:
    """The ``$ `` commands of a console block with the output lines shown after each."""
    commands: List[Command] = []
    continued = False
    for offset, line in enumerate(lines):
        if continued:
            commands[-1].text += " " + line.strip().rstrip("\\").strip()
            continued = line.rstrip().endswith("\\")
        elif line.startswith("$ "):
            commands.append(Command(first_line + offset, line[2:].rstrip().rstrip("\\").strip()))
            continued = line.rstrip().endswith("\\")
        elif commands:
            commands[-1].output.append(line)
        elif line.strip():
            raise ValueError(f"line {first_line + offset}: console output before the first '$ ' prompt")
    return commands


def _unquoted(text: str) -> Iterable[Tuple[int, str]]:
    """(index, character) of the characters of a shell line that are outside quotes."""
    quote = ""
    escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        else:
            yield index, char


def unquoted(text: str) -> str:
    """``text`` with every quoted character (and the quotes) replaced by a blank."""
    kept = dict(_unquoted(text))
    return "".join(kept.get(index, " ") for index in range(len(text)))


def strip_comment(text: str) -> str:
    """``text`` without a trailing ``# comment`` (a ``#`` outside quotes after a blank)."""
    for index, char in _unquoted(text):
        if char == "#" and (index == 0 or text[index - 1] in " \t"):
            return text[:index].rstrip()
    return text.rstrip()


def split_and(text: str) -> List[str]:
    """The parts of ``a && b && c`` (``&&`` outside quotes)."""
    ampersands = {index for index, char in _unquoted(text) if char == "&"}
    parts, start = [], 0
    for index in sorted(ampersands):
        if index >= start and index + 1 in ampersands:
            parts.append(text[start:index].strip())
            start = index + 2
    parts.append(text[start:].strip())
    return [part for part in parts if part]


# ----------------------------------------------------------------------------- output shapes

#: a number ("1." as torch prints it; both ends of a range "1..40")
NUMBER = re.compile(r"(?:(?<![\w.])|(?<=\.\.))[-+]?\d[\d,]*(?:\.(?!\.)\d*)?(?:e[-+]?\d+)?(?![\w])")
HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
ABSOLUTE = re.compile(r"(?<![\w.~])/(?:[^\s'\"/:]+/)*?(?=(?:output|data|demo_data|docs|configs|pretrained|my_\w+)/)")
#: output lines of other programs that a listing may show or not (ffmpeg / decord log lines, "[...] text")
OPTIONAL_LINE = re.compile(r"^\[[^\]]*\] ")
#: the prefix of the package logger's lines (cgnl_video/utils/logging.py): listings quote the message
LOG_PREFIX = re.compile(r"^\[\d\d/\d\d \d\d:\d\d:\d\d [A-Z]+ [\w.]+:\d+\] ")
WILDCARD = "\x00"


def normalise(line: str, words: Sequence[str] = ()) -> str:
    """The shape of an output line: numbers -> ``#``, hex -> ``#``, ``words`` -> ``<word>``,
    absolute paths into the repository -> ``<repo>/``, ``...`` -> a wildcard, runs of
    blanks -> one (columns of numbers are aligned by their width), no log prefix."""
    line = LOG_PREFIX.sub("", " ".join(line.split())).replace("...", WILDCARD)
    line = ABSOLUTE.sub("<repo>/", line)
    line = HEX.sub("#", line)
    line = NUMBER.sub("#", line)
    if words:
        line = re.sub(r"\b(?:" + "|".join(map(re.escape, sorted(words, key=len, reverse=True))) + r")\b",
                      "<word>", line)
    return line


def _line_pattern(expected: str, words: Sequence[str]) -> "re.Pattern[str]":
    parts = normalise(expected, words).split(WILDCARD)
    return re.compile(".*".join(re.escape(part) for part in parts))


def json_shape(value):
    """Keys (recursively), list lengths and scalar types of a JSON value."""
    if isinstance(value, dict):
        return {key: json_shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_shape(item) for item in value]
    return "number" if isinstance(value, (int, float)) and not isinstance(value, bool) else type(value).__name__


def _split_json(lines: Sequence[str]) -> Tuple[Optional[object], List[str]]:
    """The JSON document that starts at the first line opening with ``{`` or ``[{`` and
    the lines around it."""
    for index, line in enumerate(lines):
        if line.startswith("{") or line.startswith("[{"):
            rest = "\n".join(lines[index:])
            try:
                value, end = json.JSONDecoder().raw_decode(rest)
            except json.JSONDecodeError:
                continue
            return value, list(lines[:index]) + rest[end:].splitlines()
    return None, list(lines)


def output_mismatch(expected: Sequence[str], actual: Sequence[str], words: Sequence[str] = ()) -> Optional[str]:
    """None when ``actual`` has the shape of ``expected``, else what differs."""
    expected = [line for line in expected if line.strip()]
    expected_json, expected = _split_json(expected)
    actual_json, actual = _split_json(list(actual))
    if expected_json is not None:
        if actual_json is None:
            return "the docs show a JSON document, the output has none"
        if json_shape(expected_json) != json_shape(actual_json):
            return f"JSON shape differs:\n  docs:   {json_shape(expected_json)}\n  output: {json_shape(actual_json)}"
    shapes = [normalise(line, words) for line in actual]
    position = 0
    for line in expected:
        if not line.strip() or OPTIONAL_LINE.match(line):
            continue
        pattern = _line_pattern(line, words)
        found = next((i for i in range(position, len(shapes)) if pattern.fullmatch(shapes[i])), None)
        if found is None:
            return f"no output line (in order) has the shape of the docs' line\n  {line!r}\n  shape {pattern.pattern!r}"
        position = found + 1
    return None
