"""Mnemonic passwords: format, word source and entropy."""

import math
import re

import pytest

from hub_ext.accounts import passwords
from hub_ext.accounts.passwords import PasswordPolicyError, entropy_bits, generate_password, wordlist


def test_wordlist_is_the_eff_long_list_of_plain_words():
    words = wordlist()
    assert len(words) >= 7000  # EFF long list: 7776 words, minus the hyphenated ones
    assert len(set(words)) == len(words)
    assert all(re.fullmatch(r"[a-z]{3,9}", w) for w in words)


def test_default_format():
    password = generate_password()
    parts = password.split("-")
    assert len(parts) == 3
    assert all(p in wordlist() for p in parts)


@pytest.mark.parametrize("words, delimiter", [(3, "-"), (4, "."), (6, "_"), (10, "--"), (5, "7")])
def test_configured_format(words, delimiter):
    password = generate_password(words, delimiter)
    parts = password.split(delimiter)
    assert len(parts) == words and all(p in wordlist() for p in parts)
    assert len(password.encode()) <= 72  # bcrypt's limit


def test_entropy():
    # 3 words of ~7700 give > 38 bits; each word adds log2(list size)
    assert entropy_bits(3) > 38
    assert entropy_bits(4) - entropy_bits(3) == pytest.approx(math.log2(len(wordlist())))
    assert entropy_bits(3, 7776) == pytest.approx(3 * 12.925, abs=0.01)


def test_passwords_do_not_repeat():
    drawn = {generate_password() for _ in range(2000)}
    # 2000 draws from ~4.6e11 possibilities: a repeat would mean a broken RNG
    assert len(drawn) == 2000


def test_words_are_drawn_roughly_uniformly():
    first_letters = [generate_password(3).split("-")[0][0] for _ in range(3000)]
    # every initial letter of the list shows up (a fixed or biased pick would not)
    assert len(set(first_letters)) >= 20


def test_minimum_length_is_honoured():
    for _ in range(200):
        assert len(generate_password(3, "-", min_length=20)) >= 20
    with pytest.raises(PasswordPolicyError, match="minimum password length"):
        generate_password(3, "-", min_length=100)


@pytest.mark.parametrize("words", [0, 2, 11, "3", 3.0, True, None])
def test_bad_word_counts(words):
    with pytest.raises(PasswordPolicyError, match="number of password words"):
        passwords.check_words(words)


@pytest.mark.parametrize("delimiter", ["", " ", "a", "----", "\n", None, 1])
def test_bad_delimiters(delimiter):
    with pytest.raises(PasswordPolicyError, match="delimiter"):
        passwords.check_delimiter(delimiter)
