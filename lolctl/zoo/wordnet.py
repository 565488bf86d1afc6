"""WordNet 3.0 data: parse the Princeton ``data.*`` files and load the small extracted subset shipped with lolctl.

A synset line is ``offset lex_filenum ss_type w_cnt word lex_id ... p_cnt ptrs ... | gloss``; the lexicographer file
number names one of 45 categories (``noun.animal``, ``verb.motion``, ...). The committed subset
(``lolctl/data/wordnet/synsets.tsv.gz``) holds one row per synset: ``lexname  pos  offset  lemmas  definition``, with
lemmas joined by ``;`` and the definition without its example sentences.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body noun.cognition "
    "noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive noun.object "
    "noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation noun.shape "
    "noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication verb.competition "
    "verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()

SUBSET_PATH = Path(__file__).resolve().parents[1] / "data" / "wordnet" / "synsets.tsv.gz"


@dataclass(frozen=True)
class Synset:
    lexname: str
    pos: str
    offset: str
    lemmas: tuple[str, ...]
    definition: str

    @property
    def lemma(self) -> str:
        """The first lemma as text (underscores become spaces)."""
        return self.lemmas[0].replace("_", " ")

    @property
    def multiword(self) -> bool:
        return " " in self.lemma or "-" in self.lemma


def parse_line(line: str) -> Synset | None:
    """One ``data.*`` line → a Synset; licence header lines (starting with two spaces) → None."""
    if line.startswith("  ") or "|" not in line:
        return None
    head, gloss = line.split("|", 1)
    fields = head.split()
    offset, lexnum, pos, wcnt = fields[0], int(fields[1]), fields[2], int(fields[3], 16)
    lemmas = tuple(fields[4 + 2 * i] for i in range(wcnt))
    lemmas = tuple(w.split("(")[0] for w in lemmas)  # drop adjective markers like "(a)"
    definition = gloss.strip().split('; "')[0].strip().rstrip(";").strip()
    return Synset(LEXNAMES[lexnum], "a" if pos == "s" else pos, offset, lemmas, definition)


def parse_data_files(wordnet_dir: Path, parts: Iterable[str] = ("noun", "verb")) -> Iterator[Synset]:
    for part in parts:
        with open(Path(wordnet_dir) / f"data.{part}", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                synset = parse_line(line)
                if synset is not None and synset.definition:
                    yield synset


def _order_key(synset: Synset) -> str:
    return hashlib.sha1(f"{synset.pos}{synset.offset}".encode()).hexdigest()


def extract_subset(
    wordnet_dir: Path, out_path: Path, topics: Iterable[str], per_topic: int, other: int
) -> dict[str, int]:
    """Write a deterministic subset: up to ``per_topic`` synsets of each topic lexname and ``other`` synsets from
    the remaining noun/verb categories, chosen by a hash order (no randomness). Returns counts per lexname."""
    topics = list(topics)
    by_lex: dict[str, list[Synset]] = {}
    for synset in parse_data_files(wordnet_dir):
        by_lex.setdefault(synset.lexname, []).append(synset)
    chosen: list[Synset] = []
    for name in topics:
        chosen += sorted(by_lex.get(name, []), key=_order_key)[:per_topic]
    rest = [s for name, rows in by_lex.items() if name not in topics for s in rows]
    chosen += sorted(rest, key=_order_key)[:other]
    chosen.sort(key=lambda s: (s.lexname, s.pos, s.offset))
    text = "".join(
        f"{s.lexname}\t{s.pos}\t{s.offset}\t{';'.join(s.lemmas)}\t{s.definition[:240]}\n" for s in chosen
    )
    with open(out_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as handle:
        handle.write(text.encode("utf-8"))
    counts: dict[str, int] = {}
    for s in chosen:
        counts[s.lexname] = counts.get(s.lexname, 0) + 1
    return counts


def load_subset(path: Path | None = None) -> list[Synset]:
    """The committed subset (or another file of the same form), in file order."""
    rows = []
    with gzip.open(path or SUBSET_PATH, "rt", encoding="utf-8") as handle:
        for line in handle:
            lexname, pos, offset, lemmas, definition = line.rstrip("\n").split("\t")
            rows.append(Synset(lexname, pos, offset, tuple(lemmas.split(";")), definition))
    return rows
