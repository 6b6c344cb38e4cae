"""The data stage's report: part statistics merged in corpus order, and a human summary.

Drops are counted three ways: per filter (documents and bytes in, dropped, reasons, examples),
per source (each filter's reasons on that source's documents) and per language (the language a
`language` filter identified; documents no language filter has seen are not counted there),
besides dedup removals per source and the mixture's requested vs achieved shares.
"""

from __future__ import annotations

def count_language(languages: dict, document, reason: str | None) -> None:
    """Count one document under the language a language filter gave it (the part's `languages`)."""
    if document.language is None:
        return
    record = languages.setdefault(document.language, {"documents_in": 0, "dropped": 0, "reasons": {}})
    record["documents_in"] += 1
    if reason is not None:
        record["dropped"] += 1
        record["reasons"][reason] = record["reasons"].get(reason, 0) + 1


def dedup_by_source(duplicate_of: dict, sources: list[str]) -> dict[str, dict[str, int]]:
    """{source: {"exact": n, "near": n}}: the duplicates dedup removed from each source."""
    counts: dict[str, dict[str, int]] = {}
    for index, (_, kind) in duplicate_of.items():
        record = counts.setdefault(sources[index], {"exact": 0, "near": 0})
        record[kind] = record.get(kind, 0) + 1
    return dict(sorted(counts.items()))


def _add_counts(target: dict, record: dict) -> None:
    for key in ("documents_in", "dropped"):
        target[key] = target.get(key, 0) + record[key]
    reasons = target.setdefault("reasons", {})
    for reason, count in record["reasons"].items():
        reasons[reason] = reasons.get(reason, 0) + count


def merge_part_stats(parts: list[dict], filter_names: list[str]) -> dict:
    """Sum the per-part statistics (examples: the first ones in corpus order)."""
    sources: dict[str, dict] = {}
    filters = {name: {"name": name, "documents_in": 0, "bytes_in": 0, "dropped": 0, "bytes_dropped": 0,
                      "reasons": {}, "examples": {}} for name in filter_names}
    languages: dict[str, dict] = {}
    seconds = 0.0
    for part in parts:
        totals = sources.setdefault(part["source"], {"documents_in": 0, "bytes_in": 0, "documents_after_filters": 0,
                                                      "bytes_after_filters": 0, "filters": {}})
        totals["documents_in"] += part["documents_in"]
        totals["bytes_in"] += part["bytes_in"]
        totals["documents_after_filters"] += part["documents_out"]
        totals["bytes_after_filters"] += part["bytes_out"]
        seconds += part["seconds"]
        for language, record in part.get("languages", {}).items():
            _add_counts(languages.setdefault(language, {}), record)
        for name in filter_names:  # spec order (the part's JSON has its keys sorted)
            record = part["filters"][name]
            if record["documents_in"]:
                _add_counts(totals["filters"].setdefault(name, {}), record)
            merged = filters[name]
            for key in ("documents_in", "bytes_in", "dropped", "bytes_dropped"):
                merged[key] += record[key]
            for reason, count in record["reasons"].items():
                merged["reasons"][reason] = merged["reasons"].get(reason, 0) + count
            for reason, examples in record["examples"].items():
                kept = merged["examples"].setdefault(reason, [])
                kept.extend(examples[:max(0, 3 - len(kept))])
    for merged in filters.values():
        merged["documents_out"] = merged["documents_in"] - merged["dropped"]
        merged["bytes_out"] = merged["bytes_in"] - merged["bytes_dropped"]
        merged["reasons"] = dict(sorted(merged["reasons"].items()))
    for record in [*languages.values(), *(f for t in sources.values() for f in t["filters"].values())]:
        record["reasons"] = dict(sorted(record["reasons"].items()))
    return {"sources": sources, "filters": list(filters.values()), "worker_seconds": seconds,
            "languages": dict(sorted(languages.items(), key=lambda item: -item[1]["documents_in"]))}


def summary_text(stats: dict) -> str:
    lines = ["data stage summary", ""]
    lines.append("sources (documents in -> after filters):")
    for name, totals in stats["sources"].items():
        lines.append(f"  {name:20s} {totals['documents_in']:>10,} -> {totals['documents_after_filters']:>10,}"
                     f"   ({totals['bytes_in']:,} -> {totals['bytes_after_filters']:,} bytes)")
        for name, record in totals.get("filters", {}).items():
            if record["dropped"]:
                lines.append(f"    {name:18s} {record['documents_in']:>10,} / {record['dropped']:>8,}   [{_reasons(record)}]")
    lines += ["", "filters, in spec order (documents in / dropped):"]
    for record in stats["filters"]:
        lines.append(f"  {record['name']:20s} {record['documents_in']:>10,} / {record['dropped']:>8,}   [{_reasons(record)}]")
    if stats.get("languages"):
        lines += ["", "languages identified (documents in / dropped):"]
        for language, record in stats["languages"].items():
            lines.append(f"  {language:20s} {record['documents_in']:>10,} / {record['dropped']:>8,}   [{_reasons(record)}]")
    dedup = stats["dedup"]
    lines += ["", f"dedup: {dedup['exact_removed']:,} exact duplicates in {dedup['exact_clusters']:,} clusters, "
                  f"{dedup['near_removed']:,} near duplicates in {dedup['near_clusters']:,} clusters"]
    for name, removed in dedup.get("by_source", {}).items():
        lines.append(f"  {name:20s} {removed['exact']:>10,} exact, {removed['near']:,} near")
    if dedup.get("lsh"):
        lsh = dedup["lsh"]
        lines.append(f"  LSH: {lsh['bands']} bands x {lsh['rows']} rows, sharded over {lsh['bucket_tasks']} bucket task(s)")
    lines += ["", "mixture (requested -> achieved proportion, by estimated tokens):"]
    for name, source in stats["mixture"]["sources"].items():
        lines.append(f"  {name:20s} {source['requested_proportion']:.3f} -> {source['achieved_proportion']:.3f}"
                     f"   {source['documents_out']:,} documents, {source['epochs']:.2f} epochs")
    for warning in stats["mixture"].get("warnings", []):
        lines.append(f"  warning: {warning}")
    throughput = stats["throughput"]
    lines += ["", f"throughput: {throughput['filter_docs_per_s']:,.0f} docs/s filtering+signing "
                  f"({throughput['filter_docs_per_core_s']:,.0f} per worker), dedup "
                  f"{throughput['dedup_docs_per_s']:,.0f} docs/s",
              f"output: {stats['output']['documents']:,} documents, {stats['output']['bytes']:,} bytes", ""]
    return "\n".join(lines)


def _reasons(record: dict) -> str:
    return ", ".join(f"{reason} {count:,}" for reason, count in record["reasons"].items()) or "none"
