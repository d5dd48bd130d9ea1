"""NB101 cells: pruning, the reference hash, canonical codes, enumeration counts and the shipped index order."""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np
import pytest
from nb101_cells import INCEPTION, INCEPTION_HASH, INCEPTION_STORED

from nb360.errors import UsageError
from nb360.nb101.enumerate import canonical_codes, enumerate_cells, full_dags, reference_hashes, straightforward_enumeration
from nb360.nb101.space import NB101
from nb360.nb101.spec import OPS, ModelSpec, OutOfDomainError, brute_force_canonical, hash_module, pack, unpack

C3, C1, MP = OPS


def test_published_hash_and_stored_form_of_the_inception_cell() -> None:
    spec = ModelSpec(*INCEPTION)
    assert spec.hash() == INCEPTION_HASH
    stored = NB101.spec(spec)
    assert stored.matrix.tolist() == INCEPTION_STORED[0] and stored.ops == INCEPTION_STORED[1]
    rows = ["0111100", "0000001", "0000001", "0000001", "0000010", "0000001", "0000000"]
    assert NB101.arch(NB101.index(spec)) == "".join(rows) + "|01200"


def test_pruning_as_the_reference() -> None:
    # vertex 2 has no path to OUT, vertex 3 no path from IN: both go with their ops
    m = np.zeros((5, 5), dtype=int)
    m[0, 1] = m[1, 4] = m[0, 2] = m[3, 4] = 1
    spec = ModelSpec(m, ["input", C3, C1, MP, "output"])
    assert spec.valid_spec and spec.matrix.tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0]] and spec.ops == ["input", C3, "output"]
    assert spec.original_matrix.tolist() == m.tolist()
    # IN and OUT disconnected
    bad = ModelSpec([[0, 1, 0], [0, 0, 0], [0, 0, 0]], ["input", C3, "output"])
    assert not bad.valid_spec and bad.matrix is None and not bad.is_valid()
    with pytest.raises(OutOfDomainError, match="disconnected"):
        bad.hash()
    # limits are checked after pruning: 10 edges -> out of the space, but a valid spec
    full = np.triu(np.ones((7, 7), dtype=int), 1)
    spec = ModelSpec(full, ["input", *[C3] * 5, "output"])
    assert spec.valid_spec and not spec.is_valid()
    with pytest.raises(OutOfDomainError, match="too many edges"):
        spec.check()
    with pytest.raises(OutOfDomainError, match="unsupported op"):
        ModelSpec([[0, 1, 0], [0, 0, 1], [0, 0, 0]], ["input", "conv5x5", "output"]).check()
    for matrix, ops in [
        ([[0, 1], [1, 0]], ["input", "output"]),
        ([[0, 1]], ["input", "output"]),
        ([[0, 2], [0, 0]], ["input", "output"]),
    ]:
        with pytest.raises(UsageError):
            ModelSpec(matrix, ops)


def _random_spec(rng: random.Random, n: int) -> ModelSpec | None:
    m = np.zeros((n, n), dtype=int)
    for i in range(n):
        for j in range(i + 1, n):
            m[i, j] = rng.random() < 0.45
    spec = ModelSpec(m, ["input", *(rng.choice(OPS) for _ in range(n - 2)), "output"])
    return spec if spec.is_valid() else None


def _permuted(spec: ModelSpec, rng: random.Random) -> ModelSpec:
    """A random topological relabelling of the pruned cell, with IN and OUT in place."""
    m = spec.matrix
    n = len(m)
    while True:
        order = [0, *rng.sample(range(1, n - 1), n - 2), n - 1]
        p = m[np.ix_(order, order)]
        if not np.tril(p).any():
            return ModelSpec(p, [spec.ops[i] for i in order])


def test_hash_is_invariant_and_as_fine_as_isomorphism() -> None:
    rng = random.Random(0)
    specs = [NB101.spec(i) for i in rng.sample(range(len(NB101)), 1500)]  # distinct cells
    while len(specs) < 2500:  # and random encodings, which often prune to the same small cells
        spec = _random_spec(rng, rng.randint(4, 7))
        if spec is not None:
            specs.append(spec)
    by_canonical: dict[int, str] = {}
    by_hash: dict[str, int] = {}
    for spec in specs:
        h, c = spec.hash(), spec.code()
        other = _permuted(spec, rng)
        assert other.hash() == h and other.code() == c
        # hash classes and brute-force isomorphism classes coincide (no false positive, no false negative)
        assert by_canonical.setdefault(c, h) == h
        assert by_hash.setdefault(h, c) == c
    assert len(by_hash) > 1500


def test_pack_round_trip_and_order() -> None:
    matrix, ops = INCEPTION_STORED
    labels = [OPS.index(o) for o in ops[1:-1]]
    code = pack(matrix, labels)
    assert unpack(code)[0].tolist() == matrix and unpack(code)[1] == labels
    assert brute_force_canonical(np.array(matrix), labels) == code
    assert (
        pack([[0, 1], [0, 0]], []) < pack([[0, 1, 0], [0, 0, 1], [0, 0, 0]], [0]) < pack([[0, 1, 1], [0, 0, 1], [0, 0, 0]], [0])
    )


def test_enumeration_matches_the_straightforward_one_up_to_5_vertices() -> None:
    buckets, total = straightforward_enumeration(5)
    enum = enumerate_cells(5, hashes=True, workers=1)
    assert len(enum) == len(buckets) == 2532 and sum(enum.labelled.values()) == total
    # same cells, same first-seen representatives, same hashes, in enumeration order
    expected = sorted((code, h) for h, code in buckets.items())
    assert enum.codes.tolist() == [c for c, _ in expected]
    assert [h.decode() for h in enum.hashes.tolist()] == [h for _, h in expected]
    assert enum.counts() == {2: 1, 3: 6, 4: 84, 5: 2441}


def test_full_enumeration_counts_and_the_shipped_order() -> None:
    enum = enumerate_cells(7, hashes=False)
    assert len(enum) == 423_624  # nasbench README
    assert sum(enum.labelled.values()) == 1_293_208
    counts = enum.counts()
    assert sum(v for k, v in counts.items() if k <= 6) == 64_542
    assert np.array_equal(enum.codes, NB101.codes)  # cells.npz is this enumeration


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("NB360_SLOW"), reason="about 25 s on 2 cores; set NB360_SLOW=1")
def test_every_cell_has_a_distinct_reference_hash() -> None:
    enum = enumerate_cells(7, hashes=True)
    assert len(set(enum.hashes.tolist())) == len(enum) == 423_624  # the fingerprint has no false positive
    for i in np.random.default_rng(3).choice(len(enum), 200, replace=False).tolist():
        assert enum.hashes[i].decode() == NB101.spec(i).hash()


def test_vectorised_hashes_of_random_cells() -> None:
    idx = np.random.default_rng(1).choice(len(NB101), 300, replace=False)
    hashes = reference_hashes(NB101.codes[idx], workers=1)
    for i, h in zip(idx.tolist(), hashes.tolist()):
        assert NB101.spec(i).hash() == h.decode()


def test_canonical_codes_pick_the_minimum_encoding() -> None:
    bits = full_dags(5)
    canon = canonical_codes(5, bits, np.arange(27))
    rng = np.random.default_rng(2)
    for r, lab in zip(rng.integers(len(bits), size=40), rng.integers(27, size=40)):
        m, _ = unpack((5 << 29) | (int(bits[r]) << 8))
        labels = [(int(lab) // 3 ** (2 - i)) % 3 for i in range(3)]
        assert int(canon[r, lab]) == brute_force_canonical(m, labels)


def test_space_lookup() -> None:
    assert len(NB101) == 423_624
    spec = ModelSpec(*INCEPTION)
    i = NB101.index(spec)
    assert NB101.index(NB101.arch(i)) == i == NB101.index({"matrix": INCEPTION[0], "ops": INCEPTION[1]})
    # extra dangling vertices prune away
    m = np.zeros((7, 7), dtype=int)
    m[0, 1] = m[1, 6] = m[2, 3] = 1
    assert NB101.arch(NB101.index(ModelSpec(m, ["input", C1, C3, C3, MP, MP, "output"]))) == "010001000|1"
    assert NB101.arch(0) == "0100|"
    for bad in ("0101|", "01|", "0100|3", "x"):
        with pytest.raises(UsageError):
            NB101.index(bad)
    with pytest.raises(OutOfDomainError):
        NB101.index(ModelSpec(np.triu(np.ones((7, 7), dtype=int), 1), ["input", *[C3] * 5, "output"]))


def test_md5_text_forms() -> None:
    # the first round hashes str((out, in, label)) of Python ints
    m = np.array([[0, 1], [0, 0]])
    first = [hashlib.md5(s.encode()).hexdigest() for s in ("(1, 0, -1)", "(0, 1, -2)")]
    h = first
    for _ in range(2):
        h = [
            hashlib.md5(("" + "|" + h[1] + "|" + h[0]).encode()).hexdigest(),
            hashlib.md5((h[0] + "|" + "|" + h[1]).encode()).hexdigest(),
        ]
    assert hash_module(m, [-1, -2]) == hashlib.md5(str(sorted(h)).encode()).hexdigest()


def test_enumerate_command(tmp_path, capsys) -> None:
    from nb360.nb101.__main__ import main
    from nb360.nb101.enumerate import load

    out = tmp_path / "cells.npz"
    assert main(["enumerate", "--out", str(out), "--max_vertices", "4", "--quiet", "--workers", "1"]) == 0
    assert "91 unique cells" in capsys.readouterr().out
    enum = load(out)
    assert len(enum) == 91 and enum.labelled == {2: 1, 3: 6, 4: 90}
    assert [h.decode() for h in enum.hashes.tolist()] == [NB101.spec(i).hash() for i in range(91)]
    with np.load(out) as z:
        assert np.unpackbits(z["matrices"][5])[:49].reshape(7, 7)[:3, :3].tolist() == NB101.spec(5).matrix.tolist()
    assert main(["enumerate", "--out", str(out), "--max_vertices", "9"]) == 2
    assert "max_vertices" in capsys.readouterr().err
