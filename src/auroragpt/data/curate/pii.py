"""Regex masking of e-mail addresses, IPv4/IPv6 addresses and phone numbers.

Candidates are found by regex and IPs confirmed with `ipaddress`, so version strings such as
1.2.3 or 999.1.1.1 stay. Replacements are fixed tags, so masked text stays deterministic.
"""

from __future__ import annotations

import ipaddress
import re

EMAIL_TAG, IP_TAG, PHONE_TAG = "<EMAIL>", "<IP_ADDRESS>", "<PHONE_NUMBER>"
EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.]*\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{0,4}|(?:\d{1,3}\.){3}\d{1,3})(?![\w:])")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)[\s.-]?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?!\w)")


def _valid_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def mask_pii(text: str) -> tuple[str, dict[str, int]]:
    """(text with PII replaced by tags, count of each kind replaced)."""
    counts = {"email": 0, "ip": 0, "phone": 0}

    def sub_email(m: re.Match) -> str:
        counts["email"] += 1
        return EMAIL_TAG

    def sub_ip(m: re.Match) -> str:
        if not _valid_ip(m.group(0)):
            return m.group(0)
        counts["ip"] += 1
        return IP_TAG

    def sub_phone(m: re.Match) -> str:
        if sum(c.isdigit() for c in m.group(0)) < 10:
            return m.group(0)
        counts["phone"] += 1
        return PHONE_TAG

    text = EMAIL.sub(sub_email, text)
    text = IPV6.sub(sub_ip, text)
    text = IPV4.sub(sub_ip, text)
    text = PHONE.sub(sub_phone, text)
    return text, counts
