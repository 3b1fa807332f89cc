"""ISO 4217 currency codes and the number of minor-unit digits Stripe uses for each.

Stripe's exponent is not always ISO's (ISK, HUF, TWD and UGX differ in ISO or have
special cases), so the zero- and three-decimal lists below follow Stripe's own
documentation; getting them wrong is the "JPY amounts off by 100" bug users report of
other tools.
"""

from __future__ import annotations

from typing import Final

# fmt: off
#: Stripe's zero-decimal currencies: an amount of 500 means 500 units, not 5.00.
ZERO_DECIMAL: Final[frozenset[str]] = frozenset(
    (
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd",
        "vuv", "xaf", "xof", "xpf",
    )
)
#: Stripe's three-decimal currencies: 5000 means 5.000.
THREE_DECIMAL: Final[frozenset[str]] = frozenset(
    (
        "bhd", "jod", "kwd", "omr", "tnd",
    )
)

#: Active ISO 4217 codes, plus codes retired recently enough that charges made in them
#: may still be inside the engine's history (e.g. hrk, sll, ang).
ISO_4217: Final[frozenset[str]] = frozenset(
    (
        "aed", "afn", "all", "amd", "ang", "aoa", "ars", "aud", "awg", "azn", "bam", "bbd",
        "bdt", "bgn", "bhd", "bif", "bmd", "bnd", "bob", "bov", "brl", "bsd", "btn", "bwp",
        "byn", "bzd", "cad", "cdf", "che", "chf", "chw", "clf", "clp", "cny", "cop", "cou",
        "crc", "cuc", "cup", "cve", "czk", "djf", "dkk", "dop", "dzd", "egp", "ern", "etb",
        "eur", "fjd", "fkp", "gbp", "gel", "ghs", "gip", "gmd", "gnf", "gtq", "gyd", "hkd",
        "hnl", "hrk", "htg", "huf", "idr", "ils", "inr", "iqd", "irr", "isk", "jmd", "jod",
        "jpy", "kes", "kgs", "khr", "kmf", "kpw", "krw", "kwd", "kyd", "kzt", "lak", "lbp",
        "lkr", "lrd", "lsl", "lyd", "mad", "mdl", "mga", "mkd", "mmk", "mnt", "mop", "mro",
        "mru", "mur", "mvr", "mwk", "mxn", "mxv", "myr", "mzn", "nad", "ngn", "nio", "nok",
        "npr", "nzd", "omr", "pab", "pen", "pgk", "php", "pkr", "pln", "pyg", "qar", "ron",
        "rsd", "rub", "rwf", "sar", "sbd", "scr", "sdg", "sek", "sgd", "shp", "sle", "sll",
        "sos", "srd", "ssp", "std", "stn", "svc", "syp", "szl", "thb", "tjs", "tmt", "tnd",
        "top", "try", "ttd", "twd", "tzs", "uah", "ugx", "usd", "usn", "uyi", "uyu", "uyw",
        "uzs", "ved", "vef", "ves", "vnd", "vuv", "wst", "xaf", "xcd", "xcg", "xof", "xpf",
        "yer", "zar", "zmw", "zwg", "zwl",
    )
)
# fmt: on

#: The exponents an amount can be compared at; conditions precompute one bound per entry.
EXPONENTS: Final[tuple[int, ...]] = (0, 2, 3)


def exponent(currency: str) -> int:
    """Minor-unit digits of a lower-case code; 2 for any code Stripe does not single out.

    Unknown codes get 2 too (Stripe's default), so a fact in a currency newer than this
    list is still compared sensibly rather than dropped.
    """
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


#: The same as `exponent`, as a table for the hot path (`EXPONENT_OF.get(code, 2)`).
EXPONENT_OF: Final[dict[str, int]] = {
    **{code: 0 for code in ZERO_DECIMAL},
    **{code: 3 for code in THREE_DECIMAL},
}
DEFAULT_EXPONENT: Final = 2


def is_known(currency: str) -> bool:
    return currency in ISO_4217
