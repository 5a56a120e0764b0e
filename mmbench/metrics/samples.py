"""The sample cache: every sample the metrics need is generated once per model, stored, and shared.

Samples are grouped; the groups are generated in sampler passes (the layouts below), stored as uint8 ``.npy``
files (latents as float32), one folder per group under the job's workdir named by a content key (model-state
hash, data hash, sizes, seed, batch size, queries, layout),
written atomically, and reused by any later evaluation with the same key. The group's ``manifest.json``
records the sha256 of each array; a stored group is re-hashed before it is reused, and one that fails
(or predates the hashes) is moved aside (``mmbench.integrity``) and generated again.

Groups: ``loo`` (each modality given all others), ``given_one`` (each modality given each single other
one, on data with attribute or mask modalities and at least 3 modalities: paper Table 1), ``curves`` (the
k-observed queries that are not leave-one-out; with ``n_curves`` only for a class-stratified part of the tuples, on which every curve point,
the leave-one-out one included, is then scored), ``subsets`` (explicit given subsets), ``loo_fgsm`` (leave-one-out from FGSM-attacked
inputs) and ``uncond`` (unconditional samples). For a model that infers latents, the ``loo`` group also holds,
from the same pass (``sample_with_latents_many``), the latent behind each leave-one-out sample and ``encode`` of
the truth: the latent cosine similarity is measured on the samples coherence scores.

Two layouts. With ``plan_batch`` (what ``evaluate`` uses), the clean groups (``loo``, ``curves``, ``subsets``) are
one :mod:`~mmbench.metrics.plan`: their samples cut into passes of ``plan_batch`` samples, pass ``p`` under
``derive_seed(seed, "plan", p)``, each pass one ``model.sample_conditional_requests`` call; ``loo_fgsm``
replays the passes holding ``loo`` samples (same layout, same seeds), so clean and attacked generation see
the same noise. Without it (per group): chunk ``b`` of ``batch_size`` tuples of a group, all its queries
together, under ``derive_seed(seed, stream, b)``; ``loo`` and ``loo_fgsm`` share their stream. The layout is
part of every key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mmbench import atomic
from mmbench.contract import Capability, ConditionalAnswer, ConditionalRequest, MultimodalModel
from mmbench.data.dataset import MultimodalDataset, stratified_first
from mmbench.hashing import config_hash, sha256_array, sha256_file
from mmbench.integrity import IntegrityError, recover, verify_file
from mmbench.metrics.catalog import ConditionalGroup, conditional_groups, loo_given, subset_id
from mmbench.metrics.plan import GroupShape, Pass, mirror, pack
from mmbench.seeding import derive_seed, seeded

CACHE_FORMAT = 2  # 2: the leave-one-out latents live in the loo group
Transform = Callable[[dict[str, Tensor], Tensor], dict[str, Tensor]]
Progress = Callable[[str], None] | None
Counter = Callable[[str, int, int], None]  # (what is generated, done, total): called before and during generation


def model_fingerprint(model: MultimodalModel) -> str:
    """sha256 of the model's class, modalities, config and every tensor of its state_dict."""
    from mmbench.config import to_dict

    digest = hashlib.sha256()
    config = to_dict(model.config) if dataclasses.is_dataclass(model.config) else repr(model.config)
    header = {"class": f"{type(model).__module__}.{type(model).__qualname__}", "modalities": model.modalities}
    digest.update(config_hash({"header": header, "config": config}, length=64).encode())
    for key, value in sorted(model.state_dict().items()):
        tensor = value.detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def data_fingerprint(data: MultimodalDataset, modalities: Sequence[str]) -> str:
    """The dataset's recorded content hash when it has one, else a hash of the arrays themselves."""
    if data.data_hash:
        return config_hash({"hash": data.data_hash, "n": len(data), "modalities": list(modalities)}, length=32)
    parts = [sha256_array(np.asarray(data.images[m])) for m in modalities] + [sha256_array(data.labels)]
    return config_hash(parts, length=32)


def to_uint8(x: Tensor) -> np.ndarray:
    """Float images in [0, 1] (clamped) to uint8, on the CPU."""
    return (x.detach().float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy())


def _file(given_id: str, target: str) -> str:
    return f"{given_id}__{target}.npy"


class SampleCache:
    """Lazily generated, disk-backed samples of one model on one evaluation set."""

    def __init__(
        self,
        root: Path,
        model: MultimodalModel,
        data: MultimodalDataset,
        *,
        n_unconditional: int,
        batch_size: int,
        seed: int,
        k_curves: bool = True,
        n_curves: int | None = None,
        subsets: Sequence[Sequence[str]] = (),
        progress: Progress = None,
        plan_batch: int | None = None,
        kinds: Mapping[str, str] | None = None,
    ) -> None:
        self.root = Path(root)
        atomic.sweep_stale(self.root)  # sample sets a killed evaluation left half-written
        self.model = model
        self.names = tuple(model.modalities)
        self.data = data
        self.n_unconditional = n_unconditional
        self.batch_size = batch_size
        self.seed = seed
        self.progress = progress
        self.counter: Counter | None = None  # counts of generated samples (the pipeline prints them with an ETA)
        self.plan_batch = plan_batch  # samples per pass of the generation plan; None: per group
        loo_latents = all(model.has(c) for c in (Capability.CONDITIONAL, Capability.LATENT_INFERENCE, Capability.ENCODE))
        n_curves = n_curves if n_curves is not None and n_curves < len(data) else None
        if kinds is None:  # the data's declared kinds; undeclared modalities are images
            declared = getattr(data, "modality_kinds", None) or {}
            kinds = {m: declared.get(m, "image") for m in self.names}
        groups = conditional_groups(self.names, k_curves, subsets, loo_latents, n_curves, kinds, model.answers)
        self.groups = {g.name: g for g in groups}
        self.model_hash = model_fingerprint(model)
        self.data_hash = data_fingerprint(data, self.names)
        self.seconds: dict[str, float] = {}  # generation time per group (0 when loaded from disk; a plan's
        # time is shared among the groups it generated in proportion to their samples)
        self.passes: dict[str, int] = {}  # sampler calls per generated group or plan segment
        self.keys: dict[str, str] = {}
        self._loaded: dict[str, dict[str, np.ndarray]] = {}

    # --- public accessors ------------------------------------------------------------------------
    def conditional(self, given: Sequence[str], target: str) -> np.ndarray:
        """uint8 ``(n, C, H, W)`` samples of ``target`` given ``given``, one per tuple of ``rows(given, target)``."""
        return self._group(self._group_of(given, target))[_file(subset_id(frozenset(given), self.names), target)]

    def rows(self, given: Sequence[str], target: str) -> np.ndarray:
        """The evaluation tuples (indices into the data) the samples of a query answer, in order."""
        return self._rows(self._group_of(given, target))

    def curve_rows(self) -> np.ndarray:
        """The tuples every point of the k-curves is scored on (``n_curves`` of them, class-stratified)."""
        group = self.groups.get("curves")
        return np.arange(len(self.data)) if group is None else self._rows(group)

    def positions(self, given: Sequence[str], target: str, rows: np.ndarray) -> np.ndarray:
        """Where the tuples ``rows`` sit among a query's samples (each must have been answered)."""
        answered_rows = self.rows(given, target)
        pos = np.searchsorted(answered_rows, rows)
        if np.any(pos >= len(answered_rows)) or np.any(answered_rows[np.minimum(pos, len(answered_rows) - 1)] != rows):
            raise KeyError(f"the samples of ({sorted(given)} -> {target}) do not cover the requested tuples")
        return pos

    def _group_of(self, given: Sequence[str], target: str) -> ConditionalGroup:
        key = frozenset(given)
        holding = [group for group in self.groups.values() if any(g == key and target in ts for g, ts in group.queries)]
        if holding:  # a group answering every tuple first (the curves may hold only n_curves of them)
            return min(holding, key=lambda group: group.rows is not None)
        reason = self.model.unanswered(key, target)
        if reason:
            raise KeyError(reason)
        raise KeyError(
            f"no conditional query ({sorted(key)} -> {target}) in the sample plan; "
            "add the subset to EvalSettings.subsets"
        )

    def _rows(self, group: ConditionalGroup) -> np.ndarray:
        if group.rows is None:
            return np.arange(len(self.data))
        return stratified_first(np.asarray(self.data.labels), group.rows)

    def adversarial(self, target: str, transform: Transform, transform_id: dict[str, Any]) -> np.ndarray:
        """Leave-one-out samples of ``target`` generated from inputs changed by ``transform`` (FGSM)."""
        loo = self.groups["loo"]
        group = ConditionalGroup("loo_fgsm", loo.stream, loo.queries, transform, transform_id, latents=self.plan_batch is not None and loo.latents)
        given = subset_id(loo_given(self.names, target), self.names)
        return self._group(group)[_file(given, target)]

    def unconditional(self, modality: str) -> np.ndarray:
        """uint8 ``(n_unconditional, C, H, W)`` joint samples, modality ``modality``."""
        return self._stored("uncond", {"n": self.n_unconditional}, self._generate_unconditional)[f"{modality}.npy"]

    def latents(self, modality: str) -> tuple[np.ndarray, np.ndarray]:
        """``(infer_latent(rest -> m), encode({m}))`` as float32 ``(N, D)`` arrays; the first is the latent the
        leave-one-out sample of ``m`` was decoded from, where the model generates through its latent."""
        loo = self.groups["loo"]
        if not loo.latents:
            raise KeyError(f"{type(self.model).__name__} does not declare conditional sampling, latent inference and encode")
        arrays = self._group(loo)
        return arrays[f"inferred__{modality}.npy"], arrays[f"encoded__{modality}.npy"]

    # --- storage ---------------------------------------------------------------------------------
    def _key(self, group: str, extra: Mapping[str, Any]) -> str:
        parts = {
            "format": CACHE_FORMAT, "group": group, "model": self.model_hash, "data": self.data_hash,
            "n": len(self.data), "seed": self.seed, "batch_size": self.batch_size, **extra,
        }
        return config_hash(parts, length=24)

    def _extra(self, group: ConditionalGroup) -> dict[str, Any]:
        return {
            "queries": [[subset_id(g, self.names), sorted(t)] for g, t in group.queries],
            "stream": group.stream, "transform": group.transform_id, "latents": group.latents,
            "rows": group.rows,
        }

    def _group(self, group: ConditionalGroup) -> dict[str, np.ndarray]:
        if self.plan_batch is not None:
            return self._planned(group)
        return self._stored(group.name, self._extra(group), lambda out: self._generate_conditional(out, group))

    def _stored(self, name: str, extra: Mapping[str, Any], generate: Callable[[Path], None]) -> dict[str, np.ndarray]:
        key = self._key(name, extra)
        self.keys[name] = key
        if key not in self._loaded and not self._ready(name, key):
            self._write({name: (key, extra)}, lambda tmp: generate(tmp[name]), {name: 1})
        return self._open(name, key)

    def _ready(self, name: str, key: str) -> bool:
        """Whether the group is stored and verified (time 0 then); a damaged one is moved aside."""
        folder = self.root / f"{name}-{key}"
        ready = (folder / "manifest.json").is_file() and _verified(folder)
        if ready:
            self.seconds.setdefault(name, 0.0)
        return ready

    def _open(self, name: str, key: str) -> dict[str, np.ndarray]:
        if key not in self._loaded:
            folder = self.root / f"{name}-{key}"
            self._loaded[key] = {p.name: np.load(p, mmap_mode="r") for p in sorted(folder.glob("*.npy"))}
        return self._loaded[key]

    def _write(
        self, groups: Mapping[str, tuple[str, Mapping[str, Any]]], generate: Callable[[dict[str, Path]], None],
        weights: Mapping[str, int],
    ) -> None:
        """Generate several groups at once, each into its own folder (atomically, with its manifest)."""
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            tmps = {name: stack.enter_context(atomic.atomic_path(self.root / f"{name}-{key}")) for name, (key, _) in groups.items()}
            for tmp in tmps.values():
                tmp.mkdir(parents=True)
            generate(tmps)
            for name, (key, extra) in groups.items():
                hashes = {p.name: sha256_file(p) for p in sorted(tmps[name].glob("*.npy"))}
                manifest = {"group": name, "key": key, "parts": dict(extra), "sha256": hashes}
                (tmps[name] / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        seconds, total = time.perf_counter() - start, sum(weights.values())
        for name in groups:
            self.seconds[name] = seconds * weights[name] / total

    # --- the plan ----------------------------------------------------------------------------------
    def plan_passes(self) -> list[Pass]:
        """The passes of the clean conditional groups (:func:`mmbench.metrics.plan.pack`)."""
        if self.plan_batch is None:
            raise ValueError("this sample cache generates per group (no plan_batch)")
        shapes = [GroupShape(g.name, len(g.queries), len(self._rows(g))) for g in self.groups.values()]
        return pack(shapes, self.plan_batch)

    def _planned(self, group: ConditionalGroup) -> dict[str, np.ndarray]:
        """A group of the plan: the clean groups are generated together; a transformed ``loo`` replays the
        passes that hold ``loo`` (:func:`mmbench.metrics.plan.mirror`). Only missing groups are stored."""
        clean, passes = group.name in self.groups, self.plan_passes()
        if clean:
            segment, members, produced = passes, dict(self.groups), list(self.groups.values())
        else:
            segment, members, produced = mirror(passes, "loo", group.name), {**self.groups, group.name: group}, [group]
        layout = {"layout": "plan", "pass": self.plan_batch, "groups": [self._extra(g) for g in self.groups.values()]}
        parts = {g.name: {**self._extra(g), "plan": layout} for g in produced}
        keys = {name: self._key(name, extra) for name, extra in parts.items()}
        self.keys.update(keys)
        missing = {n: (keys[n], parts[n]) for n in keys if keys[n] not in self._loaded and not self._ready(n, keys[n])}
        if missing:
            weights = {g.name: len(g.queries) * len(self._rows(g)) for g in produced if g.name in missing}
            self._write(missing, lambda tmps: self._run_plan(segment, members, tmps), weights)
            self.passes["plan" if clean else group.name] = len(segment)
        return self._open(group.name, keys[group.name])

    def _run_plan(self, passes: Sequence[Pass], groups: Mapping[str, ConditionalGroup], out: Mapping[str, Path]) -> None:
        files = {name: _Arrays(folder, len(self._rows(groups[name]))) for name, folder in out.items()}
        device, done = self.model.device, 0
        total = sum(p.size for p in passes)
        what = "samples" if set(out) <= set(self.groups) else f"{', '.join(sorted(out))} samples"
        self._count(what, 0, total)
        for p in passes:
            requests = [self._request(groups[s.group], s.query, s.start, s.stop) for s in p.slots]
            with seeded(derive_seed(self.seed, "plan", p.index), device):
                answers = self.model.sample_conditional_requests(requests)
            if len(answers) != len(requests):
                raise ValueError(f"{type(self.model).__name__}.sample_conditional_requests answered {len(answers)} of {len(requests)} requests")
            for slot, request, answer in zip(p.slots, requests, answers, strict=True):
                if slot.group in files:
                    self._put(files[slot.group], groups[slot.group], request, answer, np.arange(slot.start, slot.stop))
            done += p.size
            self._count(what, done, total)
        for arrays in files.values():
            arrays.flush()

    def _request(self, group: ConditionalGroup, query: int, start: int, stop: int) -> ConditionalRequest:
        given, targets = group.queries[query]
        batch, labels = self.data.batch(self._rows(group)[start:stop], self.names)
        if group.transform is not None:
            batch = group.transform(batch, labels)
        device = self.model.device
        return ConditionalRequest({m: x.to(device) for m, x in batch.items()}, given, targets, group.latents)

    def _put(self, files: _Arrays, group: ConditionalGroup, request: ConditionalRequest, answer: ConditionalAnswer, idx: np.ndarray) -> None:
        given = subset_id(request.given, self.names)
        for t in sorted(request.targets):
            image = self._check("sample_conditional_requests", answer.images, t, len(idx))
            files.put(_file(given, t), idx, to_uint8(image))
            if group.latents and group.transform is None:
                if t not in answer.latents:
                    raise ValueError(f"{type(self.model).__name__}.sample_conditional_requests returned no latent for {t!r}")
                files.put(f"inferred__{t}.npy", idx, _latent_rows(answer.latents[t], len(idx)))
                files.put(f"encoded__{t}.npy", idx, _latent_rows(self.model.encode(request.batch, frozenset({t})), len(idx)))

    # --- generation ------------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        if self.progress:
            self.progress(message)

    def _count(self, what: str, done: int, total: int) -> None:
        if self.counter is not None:
            self.counter(what, done, total)

    def _chunks(self, n: int) -> Iterator[tuple[int, np.ndarray]]:
        for b, start in enumerate(range(0, n, self.batch_size)):
            yield b, np.arange(start, min(start + self.batch_size, n))

    def _image_shape(self, modality: str) -> tuple[int, ...]:
        return tuple(self.data.images[modality].shape[1:])

    def _check(self, what: str, out: Mapping[str, Tensor], modality: str, n: int) -> Tensor:
        if modality not in out:
            raise ValueError(f"{type(self.model).__name__}.{what} returned {sorted(out)}, missing {modality!r}")
        x = out[modality]
        expected = (n, *self._image_shape(modality))
        if tuple(x.shape) != expected:
            raise ValueError(
                f"{type(self.model).__name__}.{what} returned {modality!r} of shape {tuple(x.shape)}, "
                f"expected {expected} (the data's shape)"
            )
        return x

    def _generate_conditional(self, out: Path, group: ConditionalGroup) -> None:
        rows, device = self._rows(group), self.model.device
        n = len(rows)
        files = _Arrays(out, n)
        self._count(f"{group.name} samples", 0, n)
        for b, idx in self._chunks(n):
            batch, labels = self.data.batch(rows[idx], self.names)
            if group.transform is not None:
                batch = group.transform(batch, labels)
            batch = {m: x.to(device) for m, x in batch.items()}
            with seeded(derive_seed(self.seed, group.stream, b), device):
                if group.latents:
                    self._sample_with_latents(files, idx, batch, group)
                else:
                    self._sample(files, idx, batch, group)
            self._count(f"{group.name} samples", int(idx[-1]) + 1, n)
        self.passes[group.name] = b + 1
        files.flush()

    def _sample(self, files: _Arrays, idx: np.ndarray, batch: dict[str, Tensor], group: ConditionalGroup) -> None:
        outputs = self.model.sample_conditional_many(batch, list(group.queries))
        for (g, ts), result in zip(group.queries, outputs, strict=True):
            for t in ts:
                image = self._check("sample_conditional_many", result, t, len(idx))
                files.put(_file(subset_id(g, self.names), t), idx, to_uint8(image))

    def _sample_with_latents(self, files: _Arrays, idx: np.ndarray, batch: dict[str, Tensor], group: ConditionalGroup) -> None:
        queries = [(g, t) for g, ts in group.queries for t in sorted(ts)]
        images, inferred = self.model.sample_with_latents_many(batch, queries)
        for (g, t), image, z in zip(queries, images, inferred, strict=True):
            image = self._check("sample_with_latents_many", {t: image}, t, len(idx))
            files.put(_file(subset_id(g, self.names), t), idx, to_uint8(image))
            files.put(f"inferred__{t}.npy", idx, _latent_rows(z, len(idx)))
            files.put(f"encoded__{t}.npy", idx, _latent_rows(self.model.encode(batch, frozenset({t})), len(idx)))

    def _generate_unconditional(self, out: Path) -> None:
        n, device = self.n_unconditional, self.model.device
        files = _Arrays(out, n)
        self._count("unconditional samples", 0, n)
        for b, idx in self._chunks(n):
            with seeded(derive_seed(self.seed, "unconditional", b), device):
                result = self.model.sample_unconditional(len(idx))
            for m in self.names:
                files.put(f"{m}.npy", idx, to_uint8(self._check("sample_unconditional", result, m, len(idx))))
            self._count("unconditional samples", int(idx[-1]) + 1, n)
        files.flush()


def _verified(folder: Path) -> bool:
    """Whether a stored sample group matches the sha256 its manifest records for each array; if not, the
    folder is moved aside with one line saying so (the caller generates the group again)."""
    try:
        _check_group(folder)
    except IntegrityError as exc:
        recover(exc, "cached samples", "generating them again", aside=folder)
        return False
    return True


def _check_group(folder: Path) -> None:
    manifest_path = folder / "manifest.json"
    try:
        hashes = json.loads(manifest_path.read_text()).get("sha256")
    except (OSError, ValueError, AttributeError) as exc:
        raise IntegrityError(manifest_path, f"unreadable ({type(exc).__name__})") from None
    if not isinstance(hashes, dict):
        raise IntegrityError(manifest_path, "no sha256 per array (written before they were recorded)")
    present = sorted(p.name for p in folder.glob("*.npy"))
    if sorted(hashes) != present:
        raise IntegrityError(folder, f"holds arrays {present}, its manifest records {sorted(hashes)}")
    for name, digest in hashes.items():
        verify_file(folder / name, str(digest))


def _latent_rows(z: Tensor, n: int) -> np.ndarray:
    return z.detach().float().reshape(n, -1).cpu().numpy()


class _Arrays:
    """``.npy`` files of ``n`` rows under a folder, created (memory-mapped) when first written."""

    def __init__(self, folder: Path, n: int) -> None:
        self.folder, self.n = folder, n
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, name: str, idx: np.ndarray, rows: np.ndarray) -> None:
        if name not in self.arrays:
            self.arrays[name] = np.lib.format.open_memmap(
                self.folder / name, mode="w+", dtype=rows.dtype, shape=(self.n, *rows.shape[1:])
            )
        self.arrays[name][idx] = rows

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()
