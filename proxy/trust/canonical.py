"""Canonical JSON, the byte form that notary signs.

Notary (docker/go's canonical encoder) writes objects with sorted keys, no
insignificant white space, UTF-8 text as it is, and escapes only ``"`` and
``\\`` in strings; control characters are written raw. The standard library
escapes control characters, so those escapes are undone afterwards: this keeps
the fast C encoder on the common path, where no string holds a backslash.
"""

import json
import re
from typing import Any

_ESCAPE = re.compile(r'\\(\\|"|[bfnrt]|u00[01][0-9a-f])')
_RAW = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


def _unescape(match: re.Match[str]) -> str:
    seq = match.group(1)
    if seq in ('\\', '"'):
        return match.group(0)
    if seq in _RAW:
        return _RAW[seq]
    return chr(int(seq[1:], 16))


def encode_canonical(value: Any) -> bytes:
    """Return the canonical encoding of a parsed JSON value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    if "\\" in text:
        text = _ESCAPE.sub(_unescape, text)
    return text.encode("utf-8")
