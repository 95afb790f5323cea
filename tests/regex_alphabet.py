"""Can a regex match anywhere in a string made only of characters of an alphabet? A sound
over-approximation on the parsed pattern (re._parser): False means it never can. Test-only: it proves
the rule sets gpt1_fast.spacy_tokenizer takes shortcuts for (tests/test_text_fast.py)."""
import re
try:
    import re._parser as sre_parse
    from re._constants import (ANY, ASSERT, ASSERT_NOT, AT, BRANCH, CATEGORY, IN, LITERAL, MAX_REPEAT,
                               MIN_REPEAT, NEGATE, NOT_LITERAL, RANGE, SUBPATTERN)
except ImportError:  # Python < 3.11
    import sre_parse
    from sre_constants import (ANY, ASSERT, ASSERT_NOT, AT, BRANCH, CATEGORY, IN, LITERAL, MAX_REPEAT,
                               MIN_REPEAT, NEGATE, NOT_LITERAL, RANGE, SUBPATTERN)


def _in_class(items, c: str) -> bool:
    code, hit, negate = ord(c), False, False
    for op, av in items:
        if op is NEGATE:
            negate = True
        elif op is LITERAL:
            hit |= av == code
        elif op is RANGE:
            hit |= av[0] <= code <= av[1]
        elif op is CATEGORY:
            hit |= bool(re.fullmatch(f"[{_CATEGORY[str(av)]}]", c))
        else:
            raise NotImplementedError(op)
    return hit != negate


_CATEGORY = {"CATEGORY_DIGIT": r"\d", "CATEGORY_NOT_DIGIT": r"\D", "CATEGORY_SPACE": r"\s",
             "CATEGORY_NOT_SPACE": r"\S", "CATEGORY_WORD": r"\w", "CATEGORY_NOT_WORD": r"\W"}


def _seq(items, alphabet) -> bool:
    return all(_node(op, av, alphabet) for op, av in items)


def _node(op, av, alphabet) -> bool:
    if op is LITERAL:
        return chr(av) in alphabet
    if op in (NOT_LITERAL, ANY):
        return True
    if op is IN:
        return any(_in_class(av, c) for c in alphabet)
    if op in (MAX_REPEAT, MIN_REPEAT):
        return av[0] == 0 or _seq(av[2], alphabet)
    if op is SUBPATTERN:
        if av[1] & re.IGNORECASE:
            raise NotImplementedError("IGNORECASE")
        return _seq(av[-1], alphabet)
    if op is BRANCH:
        return any(_seq(b, alphabet) for b in av[1])
    if op is ASSERT:  # a lookaround sees only alphabet characters (or the string's edge: nothing)
        return _seq(av[1], alphabet)
    if op in (ASSERT_NOT, AT):
        return True
    raise NotImplementedError(op)


def may_match(pattern: re.Pattern, alphabet: str) -> bool:
    """False when `pattern` matches nowhere in any string of `alphabet`'s characters (lookarounds there
    see only such characters or the string's edge); True when it might."""
    if pattern.flags & re.IGNORECASE:
        raise NotImplementedError("IGNORECASE")
    return _seq(sre_parse.parse(pattern.pattern, pattern.flags), alphabet)
