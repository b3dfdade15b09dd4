"""PTB tokenization of captions, as the COCO caption evaluation does it, in pure Python.

pycocoevalcap tokenizes every caption with the Stanford PTBTokenizer of CoreNLP 3.4.1
(``-preserveLines -lowerCase``: one caption a line, lower-cased) and then drops the
punctuation tokens in `PUNCTUATIONS`. Published BLEU/METEOR/ROUGE-L/CIDEr numbers
depend on that exact tokenization ("don't" -> "do n't", "dog's" -> "dog 's", "(" ->
"-lrb-", which survives because the punctuation list spells it "-LRB-"), so this module
re-implements the tokenizer's lexer, PTBLexer: a JFlex scanner, i.e. the longest match
among its rules, ties going to the earlier rule, where a rule may look ahead ("trailing
context") without consuming it. The rules were written after PTBLexer.flex and fixed
on the 3.4.1 jar's behaviour: 400,000 generated captions (ordinary ones, punctuation-
heavy ones, abbreviation and contraction mixes, random character soup, URL-like
strings) came out identical to the jar's, and tests/test_caption_scores.py keeps
comparing a few hundred.

Known divergences from the jar, none in ordinary English captions:

- Line breaks other than "\\n" inside a caption ("\\r", U+2028, U+0085, form feed...):
  the jar starts a new output line there, so pycocoevalcap pairs every later caption
  of the call with the wrong tokens; here they are spaces.
- Letters and upper-case letters are Python's Unicode categories L* and Lu of the
  Basic Multilingual Plane, digits its category Nd; the jar's tables come
  from an older Unicode version, so rare or new characters may be classed differently.
  Characters outside the BMP (emoji) are deleted as "untokenizable" here; the jar
  sees them as two UTF-16 halves, with the same result in the cases tried.
- Multi-line SGML tags, e-mail addresses, URLs and phone numbers in unusual layouts
  follow PTBLexer.flex's patterns but were only compared on generated samples.

`tokenizer="java"` runs the real jar (the one shipped in pycocoevalcap) instead.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
import unicodedata
from collections.abc import Hashable, Mapping
from pathlib import Path

from cvtrain.errors import UserError

#: Tokens pycocoevalcap drops after tokenizing (its list, case-sensitive, verbatim).
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)

TOKENIZERS = ("python", "java")


def ptb_tokenize(captions: Mapping[Hashable, list[str]], tokenizer: str = "python") -> dict[Hashable, list[str]]:
    """Each caption PTB-tokenized, lower-cased and without punctuation, as pycocoevalcap does.

    `captions` maps an id to its captions (plain strings); the result keeps the ids,
    their order and the number of captions, each caption a space-joined token string.
    """
    if tokenizer not in TOKENIZERS:
        raise UserError(f"unknown tokenizer '{tokenizer}'. Valid: {', '.join(TOKENIZERS)}.")
    keys = [key for key, caps in captions.items() for _ in caps]
    lines = [caption.replace("\n", " ") for caps in captions.values() for caption in caps]
    token_lines = _java_lines(lines) if tokenizer == "java" else python_lines(lines)
    result: dict[Hashable, list[str]] = {key: [] for key in captions}
    for key, line in zip(keys, token_lines):
        result[key].append(" ".join(t for t in line.rstrip().split(" ") if t not in PUNCTUATIONS))
    return result


def python_lines(lines: list[str]) -> list[str]:
    """The Java tokenizer's output lines (tokens lower-cased, space-joined) for `lines`.

    The lines are lexed as one text joined by newlines, like the jar reads its input
    file, because a few rules look past the end of a line (an abbreviation is split
    from its period when the next caption starts with a capital).
    """
    text = _EXTRA_NEWLINES.sub(" ", "\n".join(lines))
    out: list[list[str]] = [[]]
    for token in _lex(text):
        if token is None:
            out.append([])
        else:
            out[-1].append(token.lower())
    return [" ".join(tokens) for tokens in out]


# ----------------------------------------------------------------------------------
# The lexer: JFlex semantics over Python regular expressions.
#
# A rule is (regex, trailing-context regex or "", action). At each position the rules
# that can start with the character there are tried; the one whose match plus trailing
# context is longest wins, the earlier rule on ties, and the token is the match without
# its trailing context. A rule with alternatives of different lengths is split into one
# rule per alternative (same action), so the longest alternative wins as in a DFA, not
# the first as in a backtracking regex. Plain words followed by a space skip all this.
# ----------------------------------------------------------------------------------

_EXTRA_NEWLINES = re.compile("[\r\u2028\u2029\x0b\x0c\x85]")


def _i(word: str) -> str:
    """A literal matched without regard to case (JFlex %caseless; character classes are not)."""
    return f"(?i:{word})"


def _letter_class() -> str:
    """A character class of the Unicode letters of the Basic Multilingual Plane (JFlex [:letter:])."""
    return _class_of("L")


@functools.cache
def _class_of(category: str) -> str:
    """The BMP characters whose Unicode category starts with `category`, as class ranges."""
    ranges: list[list[int]] = []
    for code in range(0x10000):
        if unicodedata.category(chr(code)).startswith(category):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges)


def _macros() -> dict[str, str]:
    """The named sub-expressions of the rules (PTBLexer.flex's macros)."""
    letters = _letter_class()
    m: dict[str, str] = {}
    m["L"] = f"[{letters}]"
    digits = _class_of("Nd")
    m["D"] = f"[{digits}]"
    m["LD"] = f"[{letters}{digits}]"
    m["SPACE"] = r"[ \t\u00A0\u2000-\u200A\u3000]"
    m["NEWLINE"] = r"(?:\r\n?|\n|\u2028|\u2029|\x0b|\x0c|\x85)"
    m["SPACENL"] = f"(?:{m['SPACE']}|{m['NEWLINE']})"
    name = r"[A-Za-z][A-Za-z0-9_:.\-]*"
    value = f"(?:'[^'\\r\\n]*'|\"[^\"\\r\\n]*\"|{name})"
    m["SGML"] = rf"<(?:[!?][A-Za-z\-][^>\r\n]*|{name}(?:[ ]+(?:{name}[ ]*=[ ]*{value}|{name}))*[ ]*/?|/{name})[ ]*>"
    m["SENTEND"] = f"{m['SPACENL']}(?:{m['SPACENL']}|[{_class_of('Lu')}]|{m['SGML']})"
    m["APOS"] = "(?:['\u0092\u2019]|" + _i("&apos;") + ")"
    m["APOSETC"] = "(?:['\u0092\u2019`\u0091\u2018\u201b]|" + _i("&apos;") + ")"
    m["WL"] = f"(?:[{letters}{_WORD_EXTRA}]|&[aeiouAEIOU]" + _i("(?:acute|grave|uml);") + ")"  # in a WORD
    m["WORD"] = f"{m['WL']}(?:{m['WL']}|{m['D']})*(?:[.!?]{m['WL']}(?:{m['WL']}|{m['D']})*)*"
    m["NUM"] = f"{m['D']}*(?:[.:,\\u00AD\\u066B\\u066C]{m['D']}+)+|{m['D']}+"
    m["ACRO"] = (
        r"[A-Za-z](?:\.[A-Za-z])*|"
        + _i("(?:canada|sino|korean|eu|japan|non)-u\\.s")
        + "|"
        + _i("u\\.s\\.-(?:u\\.k|u\\.s\\.s\\.r)")
    )
    m["ACRO2"] = r"[A-Za-z](?:\.[A-Za-z])+"
    m["HYPHEN"] = "[-_\u058a\u2010\u2011]"
    m["REDAUX"] = m["APOS"] + "(?:[msdMSD]|" + _i("re|ve|ll") + ")"
    m["SREDAUX"] = _i("n") + m["APOSETC"] + _i("t")
    m["INSENTP"] = "[,;:\u3001]"
    m["AMP"] = _i("&amp;")
    return m


# Marks and letters of other scripts that PTBLexer.flex adds to [:letter:] inside words.
_WORD_EXTRA = (
    "\u00ad\u0237-\u024f\u02c2-\u02c5\u02d2-\u02df\u02e5-\u02ff\u0300-\u036f\u0370-\u037d\u0384\u0385"
    "\u03cf\u03f6\u03fc-\u03ff\u0483-\u0487\u04cf\u04f6-\u04ff\u0510-\u0525\u055a-\u055f\u0591-\u05bd"
    "\u05bf\u05c1\u05c2\u05c4\u05c5\u05c7\u0615-\u061a\u063b-\u063f\u064b-\u065e\u0670\u06d6-\u06ef"
    "\u06fa-\u06ff\u070f\u0711\u0730-\u074f\u0750-\u077f\u07a6-\u07b1\u07ca-\u07f5\u07fa\u0900-\u0903"
    "\u093c\u093e-\u094e\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09bc-\u09c4\u09c7\u09c8\u09cb-\u09cd"
    "\u09d7\u09e2\u09e3\u0a01-\u0a03\u0a3c\u0a3e-\u0a4f\u0a81-\u0a83\u0abc-\u0acf\u0b82\u0bbe-\u0bc2"
    "\u0bc6-\u0bc8\u0bca-\u0bcd\u0c01-\u0c03\u0c3e-\u0c56\u0d3e-\u0d44\u0d46-\u0d48\u0e30-\u0e3a"
    "\u0e47-\u0e4e\u0eb1-\u0ebc\u0ec8-\u0ecd"
)


def _abbreviations() -> dict[str, list[str]]:
    """Which words keep their period: ABBREV1 (split off before a capital), ABBREV4 (kept),
    ABBREV3 (kept before a number only). The 3.4.1 lists, as far as probing the jar shows."""
    month = "Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
    days = "Mon|Tue|Tues|Wed|Thu|Thurs|Fri"
    state = (
        "Ala|Ariz|[A]z|[A]rk|Calif|Colo|Conn|Ct|Dak|[D]el|Fla|Ga|[I]ll|Ind|Kans?|Ky|[L]a|[M]ass|Md|Mich|"
        "Minn|[M]iss|Mo|Mont|Neb|Nev|Okla|[O]re|[P]a|Penn|Tenn|[T]ex|Va|Vt|[W]ash|Wisc?|Wyo"
    )
    comp = "Inc|Cos?|Corp|Pp?t[ye]s?|Ltd|Plc|Rt|Bancorp|Bhd|Assn|Univ|Intl|Sys"
    person = "Jr|Sr|Bros|Ed\\.D|Ph\\.D|Blvd|Rd|Esq"
    title = (
        "Mr|Mrs|Ms|[M]iss|Drs?|Profs?|Sens?|Reps?|Attys?|Lt|Col|Gen|Messrs|Govs?|Adm|Rev|Maj|Sgt|Cpl|Pvt|"
        "Capt|Ste?|Ave|Pres|Lieut|Hon|Brig|Co?mdr|Pfc|Spc|Supts?|Det|Mt|Ft|Adj|Adv|Asst|Assoc|Ens|Insp|Mlle|"
        "Mme|Msgr|Sfc"
    )
    lists = {
        "ABBREV1": f"{month}|{days}|{state}|{comp}|tel|est|ext|sq|{person}|etc|al|seq|Bldg",
        "ABBREV4": f"{title}|vs|Alex|Wm|Jos|Cie|a\\.k\\.a|cf|TREAS|Ph|Invt|Elec|Natl|M[ft]g|Dept",
        "ABBREV3": "ca|figs?|prop|nos?|art|bldg|prop|pp|op",
    }
    return {name: [_ci(word) for word in words.split("|")] for name, words in lists.items()}


def _ci(alternative: str) -> str:
    """An abbreviation pattern with its letters caseless, except inside [..] classes."""
    out, in_class = [], False
    for ch in alternative:
        if ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        out.append(f"[{ch.lower()}{ch.upper()}]" if ch.isalpha() and not in_class else ch)
    return "".join(out)


Rule = tuple[str, str, str]  # (regex, trailing context or "", action)


def _rules() -> list[Rule]:
    """All rules, in PTBLexer.flex's order (which breaks ties)."""
    m, ab = _macros(), _abbreviations()
    return [
        *_word_rules(m),
        *_web_rules(m),
        *_number_rules(m),
        *_abbreviation_rules(m, ab),
        *_punctuation_rules(m),
        *_compound_rules(m),
        *_quote_rules(m),
        *_other_rules(m),
    ]


def _alternatives(alternatives: list[str], trail: str, action: str) -> list[Rule]:
    return [(alt, trail, action) for alt in alternatives]


def _word_rules(m: dict[str, str]) -> list[Rule]:
    """Words, contractions ("do|n't", "it|'s"), assimilations ("gon|na"), apostrophe words."""
    L, WORD, APOS, APOSETC = m["L"], m["WORD"], m["APOS"], m["APOSETC"]
    apostrophe_words = [
        APOS + _i("n") + f"{APOS}?",
        f"[lLdDjJ]{APOS}",
        _i("dunkin") + APOS,
        _i("somethin") + APOS,
        _i("ol") + APOS,
        APOS + _i("em"),
        f"[A-HJ-XZn]{APOSETC}{L}{{2}}{L}*",
        f"{APOS}[2-9]" + _i("0s"),
        APOS + _i("till?"),
        f"{L}+[aeiouyAEIOUY]{APOSETC}[aeiouA-Z]{L}*",
        APOS + _i("cause"),
        _i("cont'd\\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"),
        _i("o") + APOSETC + _i("o"),
    ]
    return [
        (_i("c\\+\\+|c#|f#"), "", "same"),
        (_i("cannot") + "|" + APOS + _i("twas"), "", "push3"),
        (APOS + _i("tis") + "|" + _i("gonna|gotta|lemme|gimme|wanna"), "", "push2"),
        (m["SGML"], "", "sgml"),
        (_i("&(?:MD|mdash|ndash);") + "|[\u0096\u0097\u2013\u2014\u2015]", "", "dash"),
        (m["AMP"], "", "amp"),
        (_i("&(?:HT|TL|UR|LR|QC|QL|QR|odq|cdq|#[0-9]+);"), "", "same"),
        (WORD, m["REDAUX"], "word"),
        ("[A-Za-z\u00ad]*[A-MO-Za-mo-z]\u00ad*", m["SREDAUX"], "word"),
        (WORD, "", "word"),
        *_alternatives(apostrophe_words, "", "same"),
        (_i("y") + APOS, L, "same"),
    ]


def _web_rules(m: dict[str, str]) -> list[Rule]:
    """URLs, e-mail addresses, @names and #tags (longest match searched: see `_longest`)."""
    url_end = r"[^ \t\n\f\r\"<>|.!?(){},-]"
    likely_url = (
        "(?:" + _i("www") + r"\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}|"
        r"(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+" + _i("(?:com|net|org|edu)") + ")"
        rf"(?:/[^ \t\n\f\r\"<>|()]+{url_end})?"
    )
    email = (
        r"(?:<|(?i:&lt;))?[a-zA-Z0-9][^ \t\n\f\r\"<>|(){}\u00A0]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
        r"[^ \t\n\f\r\"<>|(){}.\u00A0]+(?:>|(?i:&gt;))?"
    )
    return [
        (_i("https?://") + r"[^ \t\n\f\r\"<>|(){}]+" + url_end, "", "url"),
        (likely_url, "", "url"),
        (email, "", "url"),
        (r"@[a-zA-Z_][a-zA-Z_0-9]*|#" + m["WL"] + "+", "", "same"),
    ]


def _number_rules(m: dict[str, str]) -> list[Rule]:
    """Clitics ('s, n't), dates, numbers, fractions, special tokens, slashed words, currency."""
    D, APOS = m["D"], m["APOS"]
    special = [
        "-" + _i("(?:RRB|LRB|RCB|LCB|RSB|LSB)") + "-",
        _i("C\\.D\\.s"),
        _i("pro-"),
        _i("anti-"),
        _i("S") + "(?:" + m["AMP"] + "|&)" + _i("P-500"),
        _i("S") + "(?:" + m["AMP"] + "|&)" + _i("Ls"),
        _i("Cap") + APOS + _i("n"),
        _i("c") + APOS + _i("est"),
    ]
    currency = "[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]"
    return [
        (m["REDAUX"], "[^A-Za-z]", "quote_right"),
        (m["SREDAUX"], "", "quote_right"),
        (f"{D}{{1,2}}[\\-/]{D}{{1,2}}[\\-/]{D}{{2,4}}", "", "same"),
        (f"[\\-+]?(?:{m['NUM']})", "", "soft"),
        ("[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", "", "same"),
        (f"(?:{D}{{1,4}}[- \\u00A0])?{D}{{1,4}}(?:\\\\?/|\\u2044){D}{{1,4}}", "", "frac"),
        ("[\u00bc\u00bd\u00be\u2153-\u215e]", "", "frac2"),
        *_alternatives(special, "", "amp"),
        (r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}", "", "same"),
        (r"[A-Z]*\$|#", "", "same"),
        (currency, "", "currency"),
    ]


def _abbreviation_rules(m: dict[str, str], ab: dict[str, list[str]]) -> list[Rule]:
    """Acronyms and abbreviations: when their period is a token of its own too."""
    SPACE, SPACENL, D = m["SPACE"], m["SPACENL"], m["D"]
    sentence_starts = (
        "About According Additionally After An A As At But Earlier He Her Here However If In It Last Many More Now "
        "Once One Other Our She Since So Some Such That The Their Then There These They This We When While What "
        "Yet You"
    ).split()
    next_word = "|".join(f"[{w[0]}]{_i(w[1:])}" if len(w) > 1 else f"[{w}]" for w in sentence_starts)
    next_word += "|[M]" + _i("r\\.") + "|[M]" + _i("s\\.") + "|" + m["SGML"]
    abbrev4 = [*ab["ABBREV4"], m["ACRO"]]
    extensions = (
        "bat|bmp|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf|php|pl|png|"
        "ppt|ps|py|sql|tar|txt|wav|x|xml|zip"
    )
    return [
        (f"(?:{m['ACRO']})\\.", f"{SPACENL}+(?:{next_word}){SPACENL}", "acronym"),
        *_alternatives([f"{alt}\\." for alt in ab["ABBREV3"]], f"{SPACENL}?{D}", "same"),
        (_i("pt") + "[eyEY]\\.|" + _i("co") + "\\.", SPACE + _i("ltd|lim"), "same"),
        *_alternatives([f"{alt}\\." for alt in ab["ABBREV1"]], m["SENTEND"], "abbrev1"),
        *_alternatives([f"{alt}\\." for alt in ab["ABBREV1"]], r"[\s\S][\s\S]", "same"),
        *_alternatives([f"{alt}\\." for alt in ab["ABBREV1"]], "", "abbrev1"),  # at the very end only
        *_alternatives([f"(?:{alt})\\." for alt in abbrev4], "", "same"),
        *_alternatives(abbrev4, SPACE, "same"),
        (m["ACRO"], SPACENL, "same"),
        (m["APOS"] + "[0-9][0-9]", SPACENL, "same"),
        (f"{m['LD']}+(?:\\.{m['LD']}+)*\\." + _i(f"(?:{extensions})"), f"(?:{SPACENL}|[.?!,])", "same"),
        (m["WORD"] + r"\.", m["INSENTP"], "word"),
    ]


def _punctuation_rules(m: dict[str, str]) -> list[Rule]:
    """Phone numbers, quotes, brackets, smileys, dashes, ellipses and other punctuation."""
    phone = (
        r"(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
        r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5}"
    )
    asian_smileys = [
        r"[\-\^x=~<>']_[\-\^x=~<>']",
        r"\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)",
        r"\([\^x=~<>']-[\^x=~<>'`]\)",
    ]
    return [
        (phone, "", "phone"),
        ('"|' + _i("&quot;"), "[A-Za-z0-9$]", "quote_left"),
        ('"|' + _i("&quot;"), "", "quote_right"),
        (r"<<|>>", "", "same"),
        ("<|" + _i("&lt;"), "", "lt"),
        (">|" + _i("&gt;"), "", "gt"),
        (r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]", "[^A-Za-z0-9]", "paren"),
        *_alternatives(asian_smileys, "", "paren"),
        (r"\{", "", "lcb"),
        (r"\}", "", "rcb"),
        (r"\[", "", "lsb"),
        (r"\]", "", "rsb"),
        (r"\(", "", "lrb"),
        (r"\)", "", "rrb"),
        (r"-+", "", "hyphens"),
        (r"\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026]", "", "ellipsis"),
        (r"@+|#+|_+", "", "same"),
        (r"\*+|(?:\\\*){1,3}", "", "same"),
        (m["INSENTP"], "", "same"),
        (r"[?!]+", "", "same"),
        ("[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa\u3002]", "", "same"),
        (r"=", "", "same"),
        (r"/", "", "same"),
    ]


def _compound_rules(m: dict[str, str]) -> list[Rule]:
    """Hyphenated words ("black-and-white", kept whole), O'Neil-like names, AT&T-like names."""
    hyphenated = r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:" + m["ACRO2"] + r"\.|[A-Za-z0-9\u00AD]+))+"
    part = f"(?:[dDoOlL]{m['APOSETC']}{m['LD']})?{m['LD']}+"
    thing = f"{part}(?:{m['HYPHEN']}{part})*"
    capitals = r"[A-Z]+(?:(?:" + m["AMP"] + r"|[+&])[A-Z]+)+"
    return [
        (hyphenated + r"\.", m["INSENTP"], "soft"),
        (hyphenated, "", "soft"),
        (thing + r"\.", m["INSENTP"], "same"),
        (thing, "", "same"),
        (capitals + r"\.", m["INSENTP"], "amp"),
        (capitals, "", "amp"),
    ]


def _quote_rules(m: dict[str, str]) -> list[Rule]:
    """Quotes: a straight one before a word opens (`), others close (')."""
    quote_chars = "[`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb]"
    return [
        ("'", "[A-Za-z][^ \t\n\r\u00a0]", "quote_left"),
        (m["REDAUX"], "", "quote_right"),
        *_alternatives([m["APOS"], "''", quote_chars + "{1,2}"], "", "quote_right"),
    ]


def _other_rules(m: dict[str, str]) -> list[Rule]:
    """Symbols, spaces, line breaks, and the catch-all that deletes what nothing matched."""
    symbols = (
        "[+%&~\\^|\\\\\u00a6\u00a7\u00a8\u00a9\u00ac\u00ae\u00af\u00b0-\u00b3\u00b4-\u00ba\u00d7\u00f7"
        "\u0387\u05be\u05c0\u05c3\u05c6\u05f3\u05f4\u0600-\u0603\u0606-\u060a\u060c\u0614\u061b\u061e"
        "\u066a\u066d\u0703-\u070d\u07f6\u07f7\u07f8\u0964\u0965\u0e4f\u1fbd\u2016\u2017\u2020-\u2023"
        "\u2030-\u2038\u203b\u203e-\u2042\u2044\u207a-\u207f\u208a-\u208e\u2100-\u214f\u2190-\u21ff"
        "\u2200-\u2bff\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65]"
    )
    return [
        (symbols, "", "same"),
        (f"\\x00|{m['SPACE']}+|[\\u200B\\u200E\\u200F\\uFEFF]|" + _i("&nbsp;"), "", "skip"),
        (m["NEWLINE"], "", "newline"),
        (r"[\s\S]", "", "skip"),  # untokenizable: the jar deletes it (and warns once)
    ]


@functools.cache
def _compiled() -> tuple[tuple[re.Pattern, str, object, re.Pattern | None], ...]:
    """Each rule compiled as (match)(trailing context), with its action, parsed regex and,
    for URLs and e-mail addresses, the bare pattern used to find their longest match."""
    out = []
    for regex, trail, action in _rules():
        longest = re.compile(regex) if action == "url" else None
        out.append((re.compile(f"({regex})({trail})"), action, _parse(regex), longest))
    return tuple(out)


_candidates_memo: dict[str, tuple[int, ...]] = {}


def _candidates(ch: str) -> tuple[int, ...]:
    """The rules that can match text starting with `ch` (so the others need no trying)."""
    found = _candidates_memo.get(ch)
    if found is None:
        found = tuple(i for i, rule in enumerate(_compiled()) if _can_start(rule[2], ch, False)[0])
        _candidates_memo[ch] = found
    return found


# Shortcuts, taken only where no rule can match more: an ASCII word before a space, and
# a word of two letters or more before a final "." or a "," / ";" that ends a clause
# (unless the word is an abbreviation, whose period may stay attached).
_FAST_WORD = re.compile(r"[A-Za-z]+(?=[ \n]|\Z)|[A-Za-z]{2,}(?=[.,;](?:[ \n]|\Z))")
_FAST_EXCLUDE = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])


@functools.cache
def _abbreviation_word() -> re.Pattern:
    """Words that some rule reads together with a following period."""
    ab = _abbreviations()
    return re.compile("|".join([*ab["ABBREV1"], *ab["ABBREV3"], *ab["ABBREV4"], _i("pt") + "[eyEY]", _i("co")]))


_NON_SPACE_RUN = re.compile(r"\S*")


def _lex(text: str):
    """Yield the tokens of `text` (None for a line break), as PTBLexer with its default options."""
    rules = _compiled()
    match_fast, n, pos = _FAST_WORD.match, len(text), 0
    while pos < n:
        ch = text[pos]
        if ch == " ":
            pos += 1
            continue
        if ch == "\n":
            yield None
            pos += 1
            continue
        fast = match_fast(text, pos)
        if fast and _fast_ok(fast.group(), text, fast.end()):
            yield fast.group()
            pos = fast.end()
            continue
        best, best_end, token_end = -1, -1, -1
        for rule in _candidates(ch):
            found = rules[rule][0].match(text, pos)
            if found is None:
                continue
            end, main_end = found.end(), found.end(1)
            if rules[rule][3] is not None:
                end = main_end = _longest(rules[rule][3], text, pos, end)
            if end > best_end:
                best, best_end, token_end = rule, end, main_end
        tokens, pos = _act(rules[best][1], text[pos:token_end], text, pos, token_end)
        if tokens is not None:
            yield from tokens


def _fast_ok(word: str, text: str, end: int) -> bool:
    """Whether the shortcut's word is the token: not an assimilation ("gonna" is "gon na"),
    and, before punctuation, not an abbreviation."""
    if word.lower() in _FAST_EXCLUDE:
        return False
    return end == len(text) or text[end] in " \n" or _abbreviation_word().fullmatch(word) is None


def _longest(pattern: re.Pattern, text: str, pos: int, end: int) -> int:
    """The end of the longest match of `pattern` at `pos` (a DFA's match; a backtracking
    regex returns its first, which for URLs can stop short). URLs hold no spaces."""
    limit = _NON_SPACE_RUN.match(text, pos).end()
    for stop in range(limit, end, -1):
        if pattern.fullmatch(text, pos, stop):
            return stop
    return end


# First characters, from the parsed regular expressions: a rule is tried only where its
# pattern can start. Unknown constructs count as "can start anywhere", which is safe.

try:  # Python >= 3.11
    from re import _constants as _sre_c
    from re import _parser as _sre_parse
except ImportError:  # pragma: no cover
    _sre_c = _sre_parse = None


def _parse(regex: str):
    return _sre_parse.parse(regex) if _sre_parse is not None else None


def _can_start(parsed, ch: str, icase: bool) -> tuple[bool, bool]:
    """(whether a match of `parsed` can begin with `ch`, whether it can be empty)."""
    if parsed is None:
        return True, True
    for op, av in parsed.data if hasattr(parsed, "data") else parsed:
        starts, empty = _item_can_start(op, av, ch, icase)
        if starts:
            return True, empty
        if not empty:
            return False, False
    return False, True


def _item_can_start(op, av, ch: str, icase: bool) -> tuple[bool, bool]:
    c = _sre_c
    if op is c.LITERAL:
        lit = chr(av)
        return lit == ch or (icase and lit.lower() == ch.lower()), False
    if op is c.NOT_LITERAL:
        return True, False
    if op is c.ANY:
        return True, False
    if op is c.IN:
        return _in_class(av, ch, icase), False
    if op is c.BRANCH:
        results = [_can_start(branch, ch, icase) for branch in av[1]]
        return any(r[0] for r in results), any(r[1] for r in results)
    if op is c.SUBPATTERN:
        _, add_flags, del_flags, sub = av
        icase = (icase or bool(add_flags & re.IGNORECASE)) and not del_flags & re.IGNORECASE
        return _can_start(sub, ch, icase)
    if op in (c.MAX_REPEAT, c.MIN_REPEAT, getattr(c, "POSSESSIVE_REPEAT", None)):
        low, _, sub = av
        starts, empty = _can_start(sub, ch, icase)
        return starts, empty or low == 0
    if op in (c.AT, c.ASSERT, c.ASSERT_NOT):
        return False, True
    return True, True


def _in_class(items, ch: str, icase: bool) -> bool:
    """Whether `ch` (or, caseless, its other case) is in a parsed character class."""
    c = _sre_c
    chars = {ch, ch.lower(), ch.upper()} if icase else {ch}
    negate, hit = False, False
    for op, av in items:
        if op is c.NEGATE:
            negate = True
        elif op is c.LITERAL:
            hit = hit or chr(av) in chars
        elif op is c.RANGE:
            hit = hit or any(av[0] <= ord(x) <= av[1] for x in chars)
        else:  # categories (\\d, \\s, \\w) and the like: assume yes
            return True
    return hit != negate


def _act(action: str, tok: str, text: str, start: int, end: int) -> tuple[list | None, int]:
    """The tokens a rule's match yields and the position to go on from (pushback)."""
    if action in ("same", "word", "url"):
        return [tok.replace("\u00ad", "") or "-"] if action == "word" else [tok], end
    if action == "skip":
        return None, end
    if action == "newline":
        return [None], end
    if action in _SIMPLE:
        return [_SIMPLE[action](tok)], end
    if action == "push3":
        return [tok[:-3]], end - 3
    if action == "push2":
        return [tok[:-2]], end - 2
    if action == "abbrev1":
        return [tok], end - 1
    if action == "acronym":
        return ([tok[:-1]], end - 1) if len(tok) == 2 else ([tok], end - 1)
    raise AssertionError(action)


def _latex_quotes(tok: str, left: bool) -> str:
    """Straight quotes become `` ` `` / `` `` `` (left) or ' / '' (right); curly ones by their side."""
    tok = re.sub("&apos;|'", "`" if left else "'", tok)
    tok = re.sub('"|&quot;', "``" if left else "''", tok)
    tok = re.sub("[\u0091\u2018\u201b\u2039]", "`", tok)
    tok = re.sub("[\u0092\u2019\u203a]", "'", tok)
    tok = re.sub("[\u0093\u201c\u00ab]", "``", tok)
    return re.sub("[\u0094\u201d\u00bb]", "''", tok)


def _currency(tok: str) -> str:
    tok = tok.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", tok)


def _frac2(tok: str) -> str:
    for char, value in (("\u00bc", "1/4"), ("\u00bd", "1/2"), ("\u00be", "3/4"), ("\u2153", "1/3"), ("\u2154", "2/3")):
        tok = tok.replace(char, value)
    return tok


def _parens(tok: str) -> str:
    return tok.replace("(", "-LRB-").replace(")", "-RRB-")


_SIMPLE = {
    "soft": lambda t: t.replace("\u00ad", "") or "-",
    "sgml": lambda t: t.replace(" ", "\u00a0"),
    "dash": lambda t: "--",
    "amp": lambda t: re.sub("(?i:&amp;)", "&", t),
    "quote_right": lambda t: _latex_quotes(t, False),
    "quote_left": lambda t: _latex_quotes(t, True),
    "frac": lambda t: t.replace(" ", "\u00a0"),
    "frac2": _frac2,
    "currency": _currency,
    "phone": lambda t: _parens(t.replace(" ", "\u00a0")),
    "paren": _parens,
    "lt": lambda t: "<",
    "gt": lambda t: ">",
    "lcb": lambda t: "-LCB-",
    "rcb": lambda t: "-RCB-",
    "lsb": lambda t: "-LSB-",
    "rsb": lambda t: "-RSB-",
    "lrb": lambda t: "-LRB-",
    "rrb": lambda t: "-RRB-",
    "hyphens": lambda t: "--" if 3 <= len(t) <= 4 else t,
    "ellipsis": lambda t: "...",
}


# ----------------------------------------------------------------------------------
# The real thing: Stanford's jar, as pycocoevalcap runs it.
# ----------------------------------------------------------------------------------

JAR_NAME = "stanford-corenlp-3.4.1.jar"


def java_tokenizer_available() -> tuple[bool, str]:
    """Whether `tokenizer="java"` can run here, and if not, why."""
    if shutil.which("java") is None:
        return False, "no Java runtime found (install a JRE, e.g. apt-get install default-jre-headless)"
    if _corenlp_jar() is None:
        return False, f"{JAR_NAME} not found (pip install pycocoevalcap)"
    return True, ""


def _corenlp_jar() -> Path | None:
    spec = importlib.util.find_spec("pycocoevalcap")
    if spec is None or not spec.submodule_search_locations:
        return None
    jar = Path(list(spec.submodule_search_locations)[0]) / "tokenizer" / JAR_NAME
    return jar if jar.is_file() else None


def _java_lines(lines: list[str]) -> list[str]:
    """The jar's output lines for `lines` (one Java process; input through a temporary file)."""
    ok, why = java_tokenizer_available()
    if not ok:
        raise UserError(f"the Java PTB tokenizer cannot run: {why}; or use --tokenizer python.")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "captions.txt")
        with open(path, "wb") as f:
            f.write("\n".join(lines).encode())
        cmd = ["java", "-cp", str(_corenlp_jar()), "edu.stanford.nlp.process.PTBTokenizer"]
        done = subprocess.run([*cmd, "-preserveLines", "-lowerCase", path], capture_output=True, check=False)
    if done.returncode != 0:
        raise UserError(f"the Java PTB tokenizer failed: {done.stderr.decode(errors='replace').strip()[:300]}")
    return done.stdout.decode().split("\n")
