"""The data stage's report: part statistics merged in corpus order, and a human summary."""

from __future__ import annotations


def merge_part_stats(parts: list[dict], filter_names: list[str]) -> dict:
    """Sum the per-part statistics (examples: the first ones in corpus order)."""
    sources: dict[str, dict] = {}
    filters = {name: {"name": name, "documents_in": 0, "bytes_in": 0, "dropped": 0, "bytes_dropped": 0,
                      "reasons": {}, "examples": {}} for name in filter_names}
    seconds = 0.0
    for part in parts:
        totals = sources.setdefault(part["source"], {"documents_in": 0, "bytes_in": 0,
                                                      "documents_after_filters": 0, "bytes_after_filters": 0})
        totals["documents_in"] += part["documents_in"]
        totals["bytes_in"] += part["bytes_in"]
        totals["documents_after_filters"] += part["documents_out"]
        totals["bytes_after_filters"] += part["bytes_out"]
        seconds += part["seconds"]
        for name, record in part["filters"].items():
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
    return {"sources": sources, "filters": list(filters.values()), "worker_seconds": seconds}


def summary_text(stats: dict) -> str:
    lines = ["data stage summary", ""]
    lines.append("sources (documents in -> after filters):")
    for name, totals in stats["sources"].items():
        lines.append(f"  {name:20s} {totals['documents_in']:>10,} -> {totals['documents_after_filters']:>10,}"
                     f"   ({totals['bytes_in']:,} -> {totals['bytes_after_filters']:,} bytes)")
    lines += ["", "filters, in spec order (documents in / dropped):"]
    for record in stats["filters"]:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in record["reasons"].items()) or "none"
        lines.append(f"  {record['name']:20s} {record['documents_in']:>10,} / {record['dropped']:>8,}   [{reasons}]")
    dedup = stats["dedup"]
    lines += ["", f"dedup: {dedup['exact_removed']:,} exact duplicates in {dedup['exact_clusters']:,} clusters, "
                  f"{dedup['near_removed']:,} near duplicates in {dedup['near_clusters']:,} clusters"]
    if dedup.get("lsh"):
        lsh = dedup["lsh"]
        lines.append(f"  LSH: {lsh['bands']} bands x {lsh['rows']} rows, sharded over {lsh['bucket_tasks']} bucket task(s)")
    lines += ["", "mixture (requested -> achieved proportion, by estimated tokens):"]
    for name, source in stats["mixture"]["sources"].items():
        lines.append(f"  {name:20s} {source['requested_proportion']:.3f} -> {source['achieved_proportion']:.3f}"
                     f"   {source['documents_out']:,} documents, {source['epochs']:.2f} epochs")
    throughput = stats["throughput"]
    lines += ["", f"throughput: {throughput['filter_docs_per_s']:,.0f} docs/s filtering+signing "
                  f"({throughput['filter_docs_per_core_s']:,.0f} per worker), dedup "
                  f"{throughput['dedup_docs_per_s']:,.0f} docs/s",
              f"output: {stats['output']['documents']:,} documents, {stats['output']['bytes']:,} bytes", ""]
    return "\n".join(lines)
