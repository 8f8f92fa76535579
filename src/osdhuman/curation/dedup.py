"""Duplicate and leakage control: image hashes, duplicate groups across sources, keep-once.

COCO, Open Images and VOC all draw from Flickr, so one photo can reach the pool through
several sources and land in train *and* test. Every decoded source image gets

* a content hash (BLAKE2b-64 of the decoded pixels and their shape): exact duplicates;
* a 64-bit perceptual hash (``imagehash.phash``, the maintained library: DCT of the 32x32
  luma) of the image and of its mirror image: re-encoded, resized and flipped copies.

:func:`duplicate_groups` joins images whose hashes lie within ``max_hamming`` bits (an
image's hash against the others' hashes and mirror hashes) into groups by connected
components. The near-pair search is multi-index hashing: the 64 bits are cut into ``k``
chunks, so two hashes within ``t`` bits agree within ``t // k`` bits on at least one chunk
(pigeonhole); every hash probes the chunk buckets within that radius of its own and checks
only the hashes found there with a full popcount. :func:`plan` picks ``k`` for the size
(exact chunks for small pools, 3 chunks at radius 1 for millions at t = 4). Cost is near
linear instead of ``N**2 / 2``; memory a few arrays of N plus one bucket table
(benchmarks/curation.py --dedup measures both).
"""

from __future__ import annotations

import hashlib
import itertools
import math

import numpy as np
from PIL import Image

# imagehash and scipy.sparse (~0.3 s) are imported inside the functions that deduplicate.

PHASH_SIZE = 8  # 8x8 DCT bits = 64-bit hash


# ---- hashes of one decoded image ---------------------------------------------------------
def content_hash(rgb: np.ndarray) -> str:
    """16 hex digits of BLAKE2b over the decoded pixels and their shape (exact duplicates)."""
    h = hashlib.blake2b(digest_size=8)
    h.update(np.asarray(rgb.shape, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def _bits_to_int(bits: np.ndarray) -> int:
    """(8, 8) bool -> signed int64 with the first bit most significant (imagehash's hex order)."""
    return int(np.packbits(bits.reshape(-1)).view(">i8")[0])


def perceptual_hashes(gray_u8: np.ndarray) -> tuple[int, int]:
    """(phash, phash of the mirror image) of a uint8 (H, W) luma image, as signed int64.

    The luma is reduced to imagehash's 32x32 working size once (PIL Lanczos, as
    ``imagehash.phash`` does) and hashed as is and mirrored, so the flip costs nothing.
    """
    import imagehash

    side = PHASH_SIZE * 4
    small = Image.fromarray(gray_u8).resize((side, side), Image.Resampling.LANCZOS)  # (32, 32)
    h = imagehash.phash(small, hash_size=PHASH_SIZE)
    m = imagehash.phash(small.transpose(Image.Transpose.FLIP_LEFT_RIGHT), hash_size=PHASH_SIZE)
    return _bits_to_int(h.hash), _bits_to_int(m.hash)


def hex64(v: int) -> str:
    return f"{int(v) & 0xFFFFFFFFFFFFFFFF:016x}"


# ---- near pairs by multi-index hashing ------------------------------------------------------
_BLOCK = 1 << 19  # hashes probed per vectorised step (bounded memory: ~100 MB of temporaries)
_TABLE_BITS = 24  # at most 2**24 buckets per chunk table (128 MiB of offsets)


def _chunks(k: int) -> list[tuple[int, int]]:
    """(shift, bits) of ``k`` nearly equal chunks covering 64 bits."""
    sizes = [64 // k + (1 if i < 64 % k else 0) for i in range(k)]
    shifts = np.cumsum([0] + sizes[:-1]).tolist()
    return list(zip(shifts, sizes))


def _probes(bits: int, radius: int) -> int:
    return sum(math.comb(bits, i) for i in range(radius + 1))


def _table_bits(n: int, bits: int) -> int:
    return min(bits, _TABLE_BITS, max(8, int(n).bit_length() + 1))


def plan(n: int, max_hamming: int) -> tuple[int, int]:
    """(chunks k, radius r) of least estimated cost for ``n`` hashes.

    Two hashes within ``t`` bits agree within ``r = t // k`` bits on at least one of ``k``
    chunks (pigeonhole). Each hash probes, per chunk, every value within ``r`` bits of its own
    chunk (``sum C(b, i), i <= r`` probes) and checks the hashes in that bucket: cost about
    ``n * k * probes * (1 + n / buckets)``. Exact-chunk buckets (k = t + 1, r = 0) win for
    small n; 3 chunks of ~21 bits probed at radius 1 win for millions of hashes at t = 4."""
    best = None
    for k in range(1, max_hamming + 2):
        r = max_hamming // k
        bits = max(b for _, b in _chunks(k))
        probes = _probes(bits, r)
        cost = n * k * probes * (1.0 + n / 2.0 ** _table_bits(n, bits))
        if best is None or cost < best[0]:
            best = (cost, k, r)
    return best[1], best[2]


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        masks += [sum(1 << b for b in c) for c in itertools.combinations(range(bits), r)]
    return np.array(masks, dtype=np.uint64)


def near_pairs(hashes: np.ndarray, max_hamming: int, chunks: tuple[int, int] | None = None) -> np.ndarray:
    """Index pairs (i, j), i < j, of *distinct* hash values within ``max_hamming`` bits: (P, 2) int64.

    Equal values are not paired here (callers join them through :func:`numpy.unique`).
    ``chunks`` = (k, r) overrides :func:`plan` (any k with r = t // k finds every pair)."""
    h = np.asarray(hashes).astype(np.uint64, copy=False)  # (N,)
    n = len(h)
    found = [np.zeros((0, 2), dtype=np.int64)]
    if n < 2:
        return found[0]
    k, radius = chunks or plan(n, max_hamming)
    if radius < max_hamming // k:
        raise ValueError(f"chunks {(k, radius)}: radius must be >= {max_hamming} // {k} to find every pair")
    for shift, bits in _chunks(k):
        chunk = (h >> np.uint64(shift)) & np.uint64((1 << bits) - 1)  # (N,)
        tmask = np.uint64((1 << _table_bits(n, bits)) - 1)
        bucket = (chunk & tmask).astype(np.int64)
        order = np.argsort(bucket, kind="stable")
        offsets = np.zeros(int(tmask) + 2, dtype=np.int64)
        np.cumsum(np.bincount(bucket, minlength=int(tmask) + 1), out=offsets[1:])
        by_bucket = h[order]  # hashes laid out bucket by bucket
        for flip in _flip_masks(bits, radius):
            for b0 in range(0, n, _BLOCK):
                qb = ((chunk[b0:b0 + _BLOCK] ^ flip) & tmask).astype(np.int64)  # probed bucket per hash
                lo = offsets[qb]
                cnt = offsets[qb + 1] - lo
                total = int(cnt.sum())
                if not total:
                    continue
                qi = np.repeat(np.arange(b0, b0 + len(qb), dtype=np.int64), cnt)  # (P,)
                pos = np.repeat(lo - (np.cumsum(cnt) - cnt), cnt) + np.arange(total, dtype=np.int64)
                j = order[pos]
                ok = (np.bitwise_count(h[qi] ^ by_bucket[pos]) <= max_hamming) & (qi < j)
                ok &= h[qi] != by_bucket[pos]
                if ok.any():
                    found.append(np.stack([qi[ok], j[ok]], axis=1))
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


# ---- duplicate groups ------------------------------------------------------------------------
def duplicate_groups(phash: np.ndarray, mirror: np.ndarray | None, content: list[str] | None,
                     max_hamming: int) -> np.ndarray:
    """Component label (int64, (N,)) per image: equal labels = one duplicate group.

    Joined: equal content hashes, and (``max_hamming >= 0``) images any of whose hashes
    (its phash, its mirror's phash) lie within ``max_hamming`` bits of one of the other's.
    The graph's nodes are the images and the distinct hash values (so 1,000 copies of one
    photo cost 1,000 edges, not 500,000 pairs); near pairs are searched among distinct values.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(phash)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    owners = [np.arange(n, dtype=np.int64)]
    values = [np.asarray(phash).astype(np.uint64)]
    if mirror is not None:
        owners.append(np.arange(n, dtype=np.int64))
        values.append(np.asarray(mirror).astype(np.uint64))
    uniq, inv = np.unique(np.concatenate(values), return_inverse=True)  # (U,), (N or 2N,)
    nodes = n + len(uniq)
    edges = []
    if max_hamming >= 0:
        edges.append(np.stack([np.concatenate(owners), n + inv], axis=1))  # image -- its hash values
        edges.append(n + near_pairs(uniq, max_hamming))  # hash value -- near hash value
    if content is not None:
        _, cinv = np.unique(np.asarray(content, dtype=object).astype(str), return_inverse=True)
        first = np.full(cinv.max() + 1, -1, dtype=np.int64)
        first[cinv[::-1]] = np.arange(n, dtype=np.int64)[::-1]  # first image of each content hash
        edges.append(np.stack([np.arange(n, dtype=np.int64), first[cinv]], axis=1))
    e = np.concatenate(edges) if edges else np.zeros((0, 2), dtype=np.int64)
    graph = coo_matrix((np.ones(len(e), dtype=np.int8), (e[:, 0], e[:, 1])), shape=(nodes, nodes))
    _, labels = connected_components(graph, directed=False)
    return labels[:n].astype(np.int64)


def group_ids(labels: np.ndarray, names: list[str]) -> list[str | None]:
    """``dup_group`` per image: None for an image alone, else ``d`` + 12 hex digits of a hash
    of the group's smallest member name (stable when unrelated images come and go)."""
    names = list(names)
    members: dict[int, list[str]] = {}
    for lab, name in zip(labels.tolist(), names):
        members.setdefault(lab, []).append(name)
    ids = {lab: "d" + hashlib.sha1(min(m).encode()).hexdigest()[:12] for lab, m in members.items() if len(m) > 1}
    return [ids.get(lab) for lab in labels.tolist()]


# ---- manifest-level helpers -------------------------------------------------------------------
def dup_group_column(cand, max_hamming: int, mirror: bool, enabled: bool = True) -> list[str | None]:
    """``dup_group`` per manifest row (pandas frame with source, source_image and hash columns)."""
    if not enabled or len(cand) == 0:
        return [None] * len(cand)
    first = cand.drop_duplicates(["source", "source_image"])  # one row per source image
    labels = duplicate_groups(first["phash"].to_numpy(np.int64),
                              first["phash_mirror"].to_numpy(np.int64) if mirror else None,
                              first["content_hash"].tolist(), max_hamming)
    ids = group_ids(labels, (first["source"] + "/" + first["source_image"]).tolist())
    by_image = dict(zip(zip(first["source"], first["source_image"]), ids))
    return [by_image[k] for k in zip(cand["source"], cand["source_image"])]


def keep_once(rows, source_splits: dict[str, str]) -> list[bool]:
    """Drop mask over selected rows (frame with source, source_image, dup_group, split,
    image_w, image_h): in every duplicate group only one source image keeps its crops.

    The keeper: an image of a source pinned to the group's split first, then the one with the
    most selected crops, then the largest, then by source and key (deterministic)."""
    drop = [False] * len(rows)
    grouped = rows.reset_index(drop=True)
    grouped = grouped[grouped["dup_group"].notna()]
    for _, g in grouped.groupby("dup_group", sort=False):
        per_image = g.groupby(["source", "source_image"], sort=False)
        if per_image.ngroups < 2:
            continue
        split = g["split"].iloc[0]
        ranked = sorted(per_image, key=lambda kv: (source_splits.get(kv[0][0]) != split, -len(kv[1]),
                                                   -int(kv[1]["image_w"].iloc[0]) * int(kv[1]["image_h"].iloc[0]),
                                                   kv[0][0], kv[0][1]))
        for _, members in ranked[1:]:
            for i in members.index:
                drop[i] = True
    return drop
