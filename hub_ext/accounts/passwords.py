"""Passwords: server-generated mnemonic ones (``storm-apple-ocean``) and the bcrypt check.

Words come from the EFF long word list shipped with the maintained ``xkcdpass``
package (7776 words, chosen for being easy to type and remember), restricted
to plain a-z words so the delimiter is never part of a word. Words are drawn
with ``random.SystemRandom`` (xkcdpass's generator, backed by os.urandom).

Neither tornado nor jupyterhub. The plaintext is returned to the caller
and nothing here logs or stores it.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
from functools import lru_cache

import bcrypt
from xkcdpass import xkcd_password

WORDFILE = "eff-long"
MIN_WORDS = 3
MAX_WORDS = 10
DEFAULT_WORDS = 3
DEFAULT_DELIMITER = "-"
# bcrypt (>= 4.1/5.0) refuses longer passwords with ValueError
MAX_PASSWORD_BYTES = 72
_DELIMITER = re.compile(r"[-_.,:;+=~!@#%^*/|0-9]{1,3}")


class PasswordPolicyError(ValueError):
    """Word count or delimiter out of range."""


def check_words(words) -> int:
    if isinstance(words, bool) or not isinstance(words, int) or not (
        MIN_WORDS <= words <= MAX_WORDS
    ):
        raise PasswordPolicyError(
            f"the number of password words must be an integer {MIN_WORDS}-{MAX_WORDS} (got {words!r})"
        )
    return words


def check_delimiter(delimiter) -> str:
    if not isinstance(delimiter, str) or not _DELIMITER.fullmatch(delimiter):
        raise PasswordPolicyError(
            "the password delimiter must be 1-3 characters from -_.,:;+=~!@#%^*/| or digits "
            f"(got {delimiter!r})"
        )
    return delimiter


@lru_cache(maxsize=1)
def wordlist() -> tuple[str, ...]:
    """The EFF long list, a-z words of 3-9 letters, sorted (7700+ words)."""
    words = xkcd_password.generate_wordlist(
        wordfile=WORDFILE, min_length=3, max_length=9, valid_chars="[a-z]"
    )
    return tuple(sorted(words))


def entropy_bits(words: int, wordlist_size: int | None = None) -> float:
    """Bits of entropy of a password of ``words`` words drawn uniformly."""
    size = len(wordlist()) if wordlist_size is None else wordlist_size
    return words * math.log2(size)


def generate_password(
    words: int = DEFAULT_WORDS,
    delimiter: str = DEFAULT_DELIMITER,
    min_length: int = 1,
) -> str:
    """A fresh mnemonic password of ``words`` words joined by ``delimiter``.

    Drawn again (rarely) until it has at least ``min_length`` characters and
    fits bcrypt's 72 bytes, so it always passes the signup rules.
    """
    check_words(words)
    check_delimiter(delimiter)
    candidates = list(wordlist())
    longest = words * 9 + (words - 1) * len(delimiter)
    if min_length > longest:
        raise PasswordPolicyError(
            f"{words} words cannot reach the minimum password length {min_length}"
        )
    while True:
        password = xkcd_password.generate_xkcdpassword(
            candidates, numwords=words, delimiter=delimiter
        )
        if len(password) >= min_length and len(password.encode()) <= MAX_PASSWORD_BYTES:
            return password


def hash_password(password: str) -> bytes:
    """bcrypt, as NativeAuthenticator stores it (slow: ~0.2 s)."""
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt())


@functools.cache
def _dummy_hash() -> bytes:
    # what unknown names are checked against: same cost as stored hashes
    return bcrypt.hashpw(b"no account has this password", bcrypt.gensalt())


def _check_password(encoded: bytes, hashed: bytes | None) -> bool:
    if hashed is None:
        bcrypt.checkpw(encoded, _dummy_hash())
        return False
    return bcrypt.checkpw(encoded, hashed)


async def password_matches(hashed: bytes | None, password: str) -> bool:
    """NativeAuthenticator's bcrypt check, in a worker thread.

    Upstream checks on the hub's event loop: ~0.2 s of CPU per login during
    which no other request is served (50 logins at once queued for ~24 s).
    bcrypt releases the GIL, so checks also run side by side on several cores.
    ``hashed`` None (an unknown name) is checked against a dummy hash, so that
    it costs what a known name costs and names cannot be told apart by time.
    """
    encoded = password.encode()
    if len(encoded) > MAX_PASSWORD_BYTES:
        return False  # bcrypt >= 5 raises on these; no stored password is that long
    return await asyncio.to_thread(_check_password, encoded, hashed)
