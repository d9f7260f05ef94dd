"""REPRODUCTION.md's generated blocks against the committed CSVs."""

from pathlib import Path

from byzsim.reproduction import load_manifest, regenerate

ROOT = Path(__file__).resolve().parents[1]


def test_committed_document_matches_the_committed_results():
    """REPRODUCTION.md's generated blocks are exactly what the committed CSVs give
    (`make reproduction` rebuilds them)."""
    manifest = load_manifest(ROOT / "experiments" / "reproduction.toml")
    old, new = regenerate(ROOT / "REPRODUCTION.md", manifest, ROOT / "experiments" / "results")
    assert old == new, "REPRODUCTION.md is stale: run `make reproduction`"
    assert "<!-- generated: claims all -->" in new
