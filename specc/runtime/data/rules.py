"""Domain, URL and keyword rules (the C4 and RefinedWeb style block lists, user supplied).

Order of decisions, first match wins:
1. `domain_overrides` (a domain or any of its subdomains) -> keep or drop;
2. `block_domains`, then `allow_domains` (when set, other domains are dropped);
3. `block_url_patterns` on the URL;
4. `block_keywords` (case-insensitive, whole words) and `block_patterns` on the text.
Documents without a URL skip the domain and URL rules (there is nothing to match).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from specc.runtime.data.documents import DataError, Document
from specc.spec.data import RulesFilter


def domain_of(url: str) -> str:
    host = urlsplit(url if "//" in url else f"//{url}").hostname or ""
    return host.lower().removeprefix("www.")


def domain_matches(domain: str, rule: str) -> bool:
    """`example.com` matches itself and any subdomain (`news.example.com`)."""
    rule = rule.lower().removeprefix("www.")
    return domain == rule or domain.endswith("." + rule)


def _compile(patterns: list[str], what: str, flags: int = 0) -> list[re.Pattern]:
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern, flags))
        except re.error as error:
            raise DataError(f"rules filter: {what} {pattern!r} is not a valid regular expression: {error}") from None
    return compiled


class Rules:
    def __init__(self, spec: RulesFilter):
        self.spec = spec
        self.url_patterns = _compile(spec.block_url_patterns, "block_url_patterns entry")
        self.text_patterns = _compile(spec.block_patterns, "block_patterns entry")
        keywords = [re.escape(keyword.strip()) for keyword in spec.block_keywords if keyword.strip()]
        self.keywords = re.compile(r"\b(?:" + "|".join(keywords) + r")\b", re.IGNORECASE) if keywords else None

    def check(self, document: Document) -> str | None:
        url = document.meta.get(self.spec.url_field)
        if isinstance(url, str) and url:
            reason = self._check_url(url)
            if reason == "override_keep":
                return None
            if reason:
                return reason
        if self.keywords is not None and self.keywords.search(document.text):
            return "blocked_keyword"
        if any(pattern.search(document.text) for pattern in self.text_patterns):
            return "blocked_pattern"
        return None

    def _check_url(self, url: str) -> str | None:
        domain = domain_of(url)
        for rule, action in sorted(self.spec.domain_overrides.items(), key=lambda item: -len(item[0])):
            if domain_matches(domain, rule):
                return "override_keep" if action == "keep" else "override_drop"
        if any(domain_matches(domain, rule) for rule in self.spec.block_domains):
            return "blocked_domain"
        if self.spec.allow_domains and not any(domain_matches(domain, rule) for rule in self.spec.allow_domains):
            return "domain_not_allowed"
        if any(pattern.search(url) for pattern in self.url_patterns):
            return "blocked_url"
        return None
