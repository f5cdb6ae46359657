"""Training the embedder (docs/method.md#training): paired clips and pictures -> ``embedder.bin`` in the official
layout.

Data flow: ``audiotoken.dataset`` samples -> frozen Fbank + BEATs -> features [B, N, 3C] -> the trainable
``Embedder`` -> token [B, D] -> ``TextConditioner`` ("a photo of <*>") -> the frozen UNet, which predicts the
noise (or v) added to the frozen VAE's latent of the picture. Only the embedder learns. ``OUT/embedder.bin``
has the official key layout, so ``AudioEncoder`` and ``audiotoken-rt export`` take it like the released file.

Loss per micro-batch: mean (UNet(z_t, t, c) - target)^2 + lambda_l1 mean|e|, plus, with
``cosine_loss``, lambda_c (1 - mean_b cos(e_b, tau_b))^2, where tau_b is the mean of the frozen CLIP input
embeddings of the label's BPE tokens (no BOS/EOS). z0 = (mean + std n) x scaling factor, a VAE posterior
sample; t ~ U{0 .. T-1}; z_t and v from a DDPMScheduler built from the model's scheduler config, whose
``prediction_type`` picks the target. Optimiser: AdamW (0.9, 0.999, eps 1e-8, wd 1e-2) at a
constant lr; ``scale_lr`` (on by default, as the official code) multiplies the base lr by grad_accum x batch
x processes, and the effective lr is printed and recorded (docs/method.md#quirks, Q7).

Official bugs fixed (docs/method.md#quirks): Q4 (the cosine loss works, single token), Q5 (checkpoints hold the
embedder; the official one saved an absent LoRA and crashed at step 1000), Q6 (real boolean options, see the CLI).

Exact resume: every random draw is a pure function of (seed, micro-step, process): the data order, windows
and frames (``audiotoken.dataset``) and, here, the posterior sample, noise and timesteps (one generator per
micro-step). A checkpoint holds the embedder, the optimiser (and fp16 loss-scaler) state and each process's
global RNG states, so resuming at step s replays steps s+1, ... with the draws of an uninterrupted run.

Accelerate, used the standard way: ``Accelerator(mixed_precision, gradient_accumulation_steps)``, the embedder
and optimiser through ``prepare``, ``accumulate`` and ``backward``; several GPUs with
``accelerate launch -m audiotoken_rt train ...``. The frozen UNet, VAE and text encoder take the mixed-precision
dtype; Fbank and BEATs stay fp32 (frame power overflows fp16). Each process reads its own positions of the
sample stream (``StreamPositions``) instead of a prepared DataLoader, so the data is the same whatever the
number of workers and wherever a run resumed.

OUT/ holds ``checkpoint-<step>/`` (embedder.bin, embedder.safetensors, config.json, optimizer.pt,
rng-<process>.pt; built aside, fsynced and renamed into place by ``runtime.atomic.building_folder``, and one a
kill left finished but unpublished is published when the next run starts), the final ``embedder.bin``,
``embedder.safetensors`` and ``config.json`` (copies of the last checkpoint's, each replaced whole, config.json
last; a run killed between them is completed by ``--resume latest``, which writes them again), ``metrics.csv``
(step,loss,loss_ldm,loss_l1,loss_cos,lr; a line per optimiser step, flushed), TensorBoard logs under
``audiotoken-train/`` when tensorboard is installed, and with ``cache_features`` the on-disk feature cache
``feature-cache/beats-<sha256 of the BEATs file>-<L>s/`` (float32, one file per clip and window start; it
outlives the run, serves resumed and repeated runs, and is shared by processes and loader workers).
"""

from __future__ import annotations

import hashlib
import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import save as safetensors_bytes
from torch.utils.data import DataLoader

from audiotoken.beats import BEATs
from audiotoken.checkpoints import load_strict, read_torch_file
from audiotoken.dataset import DataReport, FeatureCache, PairedClips, StreamPositions, collate_samples, scan_dataset
from audiotoken.embedder import Embedder
from audiotoken.fbank import Fbank
from audiotoken.stable_diffusion import StableDiffusion
from audiotoken.text import TextConditioner, tokenize
from audiotoken.train_config import TrainConfig
from runtime.atomic import building_folder, remove_stale_builds_in, write_atomically
from runtime.contract import PLACEHOLDER
from runtime.errors import CheckpointError, ConfigError

DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}  # by TrainConfig.mixed_precision
ADAMW = {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}
METRICS = ("loss", "loss_ldm", "loss_l1", "loss_cos")
NOISE_STREAM = 2  # seed stream of the posterior sample, noise and timesteps (the dataset owns streams 0 and 1)
CHECKPOINT = "checkpoint-"
TRACKER = "audiotoken-train"
# what a resumed run must share with the original one to continue its loss trajectory exactly
TRAJECTORY = (
    "batch_size",
    "grad_accum",
    "lr",
    "scale_lr",
    "lambda_l1",
    "cosine_loss",
    "lambda_cosine",
    "audio_seconds",
    "resolution",
    "template",
    "mixed_precision",
    "seed",
    "processes",
    "clips_sha256",
)


@dataclass
class FrozenModels:
    """Stable Diffusion and BEATs, frozen: eval mode, no gradients (docs/method.md#training)."""

    fbank: Fbank
    beats: BEATs
    vae: torch.nn.Module
    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    noise_scheduler: object  # diffusers DDPMScheduler from the model's scheduler config

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"beats": self.beats, "vae": self.vae, "unet": self.unet, "text_encoder": self.text_encoder}


def load_frozen(sd: str | Path, beats: str | Path) -> FrozenModels:
    """Load a diffusers Stable Diffusion (hub id or folder) and an official BEATs ``.pt``, frozen."""
    stable_diffusion = StableDiffusion.open(sd)
    frozen = FrozenModels(
        fbank=Fbank(),
        beats=BEATs.from_checkpoint(beats),
        vae=stable_diffusion.vae(),
        unet=stable_diffusion.unet(),
        text_encoder=stable_diffusion.text_encoder(),
        tokenizer=stable_diffusion.tokenizer(),
        noise_scheduler=stable_diffusion.noise_scheduler(),
    )
    for module in frozen.modules().values():
        module.requires_grad_(False).eval()
    return frozen


@torch.no_grad()
def label_targets(text_encoder, tokenizer, labels: list[str]) -> torch.Tensor:
    """tau per label: the mean of the frozen CLIP input embeddings of its BPE tokens, BOS/EOS dropped: [L, D]."""
    table = text_encoder.get_input_embeddings().weight  # [V, D]
    rows = []
    for label in labels:
        ids = tokenizer(label).input_ids[1:-1]
        if not ids:
            raise ConfigError(
                f"label {label!r} has no text tokens, so the cosine loss has no target",
                hint="give every train row of labels.csv a label, or drop --cosine-loss",
            )
        rows.append(table[ids].float().mean(dim=0))  # [D]
    return torch.stack(rows)  # [L, D]


def stream_seed(*keys: int) -> int:
    """A 64-bit seed from integer keys, e.g. (seed, stream, micro-step, process)."""
    return int(np.random.SeedSequence(list(keys)).generate_state(1, np.uint64)[0])


class Objective:
    """The loss of one micro-batch (docs/method.md#training), with the prompt ids and cosine targets built once."""

    def __init__(self, frozen: FrozenModels, config: TrainConfig, labels: list[str], device, autocast):
        self.frozen, self.config, self.device, self.autocast = frozen, config, device, autocast
        self.dtype = DTYPES[config.mixed_precision]
        self.text = TextConditioner(frozen.text_encoder, frozen.tokenizer.convert_tokens_to_ids(PLACEHOLDER))
        self.ids = tokenize(frozen.tokenizer, [config.template]).to(device)  # [1, 77]
        self.targets = (
            label_targets(frozen.text_encoder, frozen.tokenizer, labels).to(device) if config.cosine_loss else None
        )  # [L, D]
        self.scaling = frozen.vae.config.scaling_factor
        self.prediction = frozen.noise_scheduler.config.prediction_type
        if self.prediction not in ("epsilon", "v_prediction"):
            raise ConfigError(
                f"the scheduler's prediction_type is {self.prediction!r}; training supports epsilon and v_prediction"
            )

    def __call__(self, embedder, features, images, labels, generator: torch.Generator) -> torch.Tensor:
        """features [B, N, 3C], images [B, 3, H, W] in [-1, 1], labels [B] -> [4]: loss, loss_ldm, loss_l1, loss_cos."""
        scheduler, batch = self.frozen.noise_scheduler, images.shape[0]
        with torch.no_grad():
            posterior = self.frozen.vae.encode(images.to(self.device, self.dtype)).latent_dist
            shape = posterior.mean.shape  # [B, 4, H / 8, W / 8]
            sample, noise = torch.randn((2, *shape), generator=generator).to(self.device)  # [B, 4, h, w] each
            t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator).to(
                self.device
            )  # [B]
            z0 = (posterior.mean.float() + posterior.std.float() * sample) * self.scaling  # [B, 4, h, w]
            zt = scheduler.add_noise(z0, noise, t)  # [B, 4, h, w]
            target = noise if self.prediction == "epsilon" else scheduler.get_velocity(z0, noise, t)  # [B, 4, h, w]
        with self.autocast():
            token = embedder(features)  # [B, D]
            cond = self.text(self.ids.expand(batch, -1), token)  # [B, 77, D]
            pred = self.frozen.unet(zt.to(self.dtype), t, cond.to(self.dtype)).sample  # [B, 4, h, w]
        token = token.float()  # [B, D]
        ldm = F.mse_loss(pred.float(), target)
        l1 = self.config.lambda_l1 * token.abs().mean()
        cos = torch.zeros((), device=token.device)
        if self.targets is not None:  # the batch mean sits inside the square, as in the official loss
            cos = (
                self.config.lambda_cosine
                * (1 - F.cosine_similarity(token, self.targets[labels.to(self.device)], dim=-1).mean()) ** 2
            )
        return torch.stack([ldm + l1 + cos, ldm, l1, cos])  # [4]


@torch.no_grad()
def batch_features(batch: dict, frozen: FrozenModels, cache: FeatureCache | None, device) -> torch.Tensor:
    """BEATs features [B, N, 3C] on ``device``: cached ones as read, the rest through Fbank and BEATs in fp32 (then cached)."""
    features = list(batch["features"])
    todo = [i for i, f in enumerate(features) if f is None]
    if todo:
        waves = torch.stack([batch["audio"][i] for i in todo]).to(device)  # [M, L * 16000]
        computed = frozen.beats(frozen.fbank(waves)).float()  # [M, N, 3C]
        for i, row in zip(todo, computed, strict=True):
            features[i] = row  # [N, 3C]
            if cache is not None:
                cache.save(batch["names"][i], batch["starts"][i], row)
    return torch.stack([f.to(device) for f in features])  # [B, N, 3C]


def feature_cache(config: TrainConfig) -> FeatureCache:
    """OUT/feature-cache/beats-<sha256 of the BEATs file>-<L>s: features depend on both."""
    digest = hashlib.sha256()
    with open(config.beats, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return FeatureCache(config.out / "feature-cache" / f"beats-{digest.hexdigest()[:16]}-{config.audio_seconds}s")


def initial_embedder(config: TrainConfig, feature_dim: int, token_dim: int) -> Embedder:
    """A seeded random embedder, or the weights of ``config.embedder`` to fine-tune."""
    if config.embedder is None:
        return Embedder(feature_dim, token_dim)
    embedder = Embedder.from_file(config.embedder)
    if (embedder.fc1.in_features, embedder.token_dim) != (feature_dim, token_dim):
        raise CheckpointError(
            f"{config.embedder}: maps {embedder.fc1.in_features} -> {embedder.token_dim}, but this BEATs and"
            f" Stable Diffusion need {feature_dim} -> {token_dim}",
            hint="fine-tune an embedder made for these models",
        )
    return embedder.train().requires_grad_(True)


def effective_lr(config: TrainConfig, processes: int) -> float:
    """With ``scale_lr`` the base lr is multiplied by grad_accum x batch x processes (docs/method.md#training,
    quirk Q7)."""
    return config.lr * config.grad_accum * config.batch_size * processes if config.scale_lr else config.lr


def write_embedder(folder: Path, embedder: Embedder, record: dict) -> None:
    """``embedder.bin`` (a bare state_dict with the official keys, docs/method.md#the-embedder),
    ``embedder.safetensors``, ``config.json``, each replaced whole (``write_atomically``), ``config.json`` last: a
    ``config.json`` naming step s has step s's weights beside it."""
    state = {k: v.detach().float().cpu().contiguous() for k, v in embedder.state_dict().items()}
    pickled = io.BytesIO()
    torch.save(state, pickled)
    write_atomically(folder / "embedder.safetensors", safetensors_bytes(state))
    write_atomically(folder / "embedder.bin", pickled.getbuffer())
    write_atomically(folder / "config.json", (json.dumps(record, indent=2) + "\n").encode())


def rng_states() -> dict:
    """This process's global RNG states (python, numpy, torch, CUDA), in types ``torch.load(weights_only)`` reads."""
    numpy_state = np.random.get_state(legacy=False)
    numpy_state["state"] = {"key": numpy_state["state"]["key"].tolist(), "pos": numpy_state["state"]["pos"]}
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state(), "cuda": cuda}


def restore_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    numpy_state = states["numpy"]
    numpy_state["state"]["key"] = np.asarray(numpy_state["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_state)
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def save_checkpoint(out: Path, step: int, accelerator, embedder, optimizer, record: dict) -> Path:
    """``OUT/checkpoint-<step>/``, built aside and renamed (``runtime.atomic.building_folder``), so an interrupted
    save never looks like a checkpoint; the main process writes every process's RNG states, gathered to it."""
    from accelerate.utils import gather_object

    final = out / f"{CHECKPOINT}{step}"
    states = gather_object([rng_states()])  # one per process, in process order
    if accelerator.is_main_process:
        with building_folder(final) as staging:
            for index, state in enumerate(states):
                torch.save(state, staging / f"rng-{index}.pt")
            write_embedder(staging, accelerator.unwrap_model(embedder), {**record, "step": step})
            scaler = accelerator.scaler.state_dict() if accelerator.scaler is not None else None
            torch.save({"step": step, "optimizer": optimizer.state_dict(), "scaler": scaler}, staging / "optimizer.pt")
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(out: Path, resume: str | None) -> Path | None:
    """The folder to resume from: ``resume`` itself, or the highest ``checkpoint-<step>`` in OUT for "latest"."""
    if resume is None:
        return None
    if resume == "latest":
        steps = [
            int(p.name[len(CHECKPOINT) :]) for p in out.glob(f"{CHECKPOINT}*") if p.name[len(CHECKPOINT) :].isdigit()
        ]
        return out / f"{CHECKPOINT}{max(steps)}" if steps else None
    folder = Path(resume)
    if not (folder / "optimizer.pt").is_file():
        raise CheckpointError(
            f"{folder}: not a training checkpoint (no optimizer.pt)", hint="pass OUT/checkpoint-<step>, or latest"
        )
    return folder


def restore_checkpoint(folder: Path, record: dict, embedder: Embedder, optimizer, accelerator) -> int:
    """Load a checkpoint into the (unprepared) embedder and optimiser, the loss scaler and the RNG states; return its step."""
    recorded = json.loads((folder / "config.json").read_text())
    changed = [
        f"{key} {recorded.get(key)!r} -> {record[key]!r}" for key in TRAJECTORY if recorded.get(key) != record[key]
    ]
    if changed:
        raise ConfigError(
            f"{folder}: resuming with other options would leave its loss trajectory ({'; '.join(changed)})",
            hint="pass the options of the original run, or train into a new --out",
        )
    hint = "the checkpoint is damaged: resume from an earlier one"
    load_strict(
        embedder, read_torch_file(folder / "embedder.bin", "embedder weights", hint=hint), str(folder / "embedder.bin")
    )
    state = read_torch_file(folder / "optimizer.pt", "optimiser state", hint=hint)
    optimizer.load_state_dict(state["optimizer"])
    if state["scaler"] is not None and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(state["scaler"])
    rng = folder / f"rng-{accelerator.process_index}.pt"
    if rng.is_file():
        restore_rng_states(read_torch_file(rng, "RNG states", hint=hint))
    return int(state["step"])


class MetricsLog:
    """``OUT/metrics.csv``: a line per optimiser step, flushed; resuming at step s drops the lines after s (and a
    line a kill cut short), in a new file that replaces the old one whole."""

    HEADER = ("step", *METRICS, "lr")

    def __init__(self, path: Path, keep_until: int):
        kept = []
        if keep_until and path.is_file():
            rows = [line.split(",") for line in path.read_text().splitlines()[1:]]
            kept = [",".join(row) for row in rows if len(row) == len(self.HEADER) and int(row[0]) <= keep_until]
        write_atomically(path, ("\n".join([",".join(self.HEADER), *kept]) + "\n").encode())
        self.file = open(path, "a", encoding="utf-8")

    def write(self, step: int, values: list[float], lr: float) -> None:
        self.file.write(",".join([str(step), *(f"{v:.9g}" for v in values), f"{lr:.9g}"]) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


@dataclass
class TrainResult:
    """What a run produced."""

    out: Path
    embedder: Path  # OUT/embedder.bin
    step: int  # the optimiser step the embedder is at
    effective_lr: float
    report: DataReport  # what the scan left out
    skipped: dict[str, str]  # clip -> reason, for files that passed the scan but failed to decode


def train(config: TrainConfig, frozen: FrozenModels | None = None, console: Console | None = None) -> TrainResult:
    """Train the embedder into ``config.out``. ``frozen`` reuses loaded models (moved to the accelerator's device
    and dtype); otherwise they are loaded from ``config.sd`` and ``config.beats``."""
    from accelerate import Accelerator
    from accelerate.utils import is_tensorboard_available, set_seed

    config.check()
    console = console or Console(stderr=True)
    accelerator = Accelerator(
        mixed_precision=config.mixed_precision,
        gradient_accumulation_steps=config.grad_accum,
        log_with="tensorboard" if is_tensorboard_available() else None,
        project_dir=config.out,
    )
    say = console.print if accelerator.is_main_process else (lambda *args, **kwargs: None)
    config.out.mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:  # a checkpoint a kill left finished but unpublished is published
        for folder in remove_stale_builds_in(config.out):
            say(f"removed {folder}, left by a run that was killed", markup=False)
    accelerator.wait_for_everyone()

    # 1. data: pair the files, report what is left out, then an endless seeded stream of samples
    clips, report = scan_dataset(config.data, config.exclude)
    for line in report.lines():
        say(line, markup=False, highlight=False)
    if not clips:
        raise ConfigError(f"{config.data}: no usable audio/picture pairs", hint="see the report above")
    cache = feature_cache(config) if config.cache_features else None
    dataset = PairedClips(clips, config.seed, config.audio_seconds, config.resolution, cache)

    # 2. models: frozen Stable Diffusion and BEATs on the device, the embedder seeded or fine-tuned
    frozen = frozen or load_frozen(config.sd, config.beats)
    dtype = DTYPES[config.mixed_precision]
    frozen.fbank.to(accelerator.device)
    frozen.beats.to(accelerator.device)  # fp32: BEATs reads the fbank, whose frame power overflows fp16
    for module in (frozen.vae, frozen.unet, frozen.text_encoder):
        module.to(accelerator.device, dtype)
    objective = Objective(frozen, config, dataset.labels, accelerator.device, accelerator.autocast)
    set_seed(config.seed)
    embedder = initial_embedder(config, frozen.beats.feature_dim, objective.text.token_dim)

    # 3. optimiser, the record of the run, and the checkpoint to resume from
    processes, rank, accum = accelerator.num_processes, accelerator.process_index, config.grad_accum
    lr = effective_lr(config, processes)
    optimizer = torch.optim.AdamW(embedder.parameters(), lr=lr, **ADAMW)
    names = "\n".join(f"{clip.name},{clip.label}" for clip in clips)
    record = {
        **config.to_json(),
        "effective_lr": lr,
        "processes": processes,
        "pairs": len(clips),
        "clips_sha256": hashlib.sha256(names.encode()).hexdigest(),
        "feature_dim": frozen.beats.feature_dim,
        "token_dim": objective.text.token_dim,
        "prediction_type": objective.prediction,
        "placeholder_id": objective.text.placeholder_id,
    }
    checkpoint = find_checkpoint(config.out, config.resume)
    if checkpoint is None and find_checkpoint(config.out, "latest") is not None:
        raise ConfigError(
            f"{config.out}: holds the checkpoints of an earlier run",
            hint="pass --resume latest to continue it, or train into a new --out",
        )
    start = restore_checkpoint(checkpoint, record, embedder, optimizer, accelerator) if checkpoint else 0
    say(
        f"resuming from {checkpoint} (step {start})"
        if checkpoint
        else "starting a new run" + (" (no checkpoint to resume in OUT)" if config.resume else ""),
        markup=False,
    )
    scaled = f" = {config.lr:g} x grad-accum {accum} x batch {config.batch_size} x processes {processes} (--scale-lr)"
    say(f"learning rate {lr:.6g}" + (scaled if config.scale_lr else " (--no-scale-lr)"), markup=False)
    embedder, optimizer = accelerator.prepare(embedder, optimizer)

    # 4. the loop: grad_accum micro-batches per optimiser step, each with its own seeded draws
    metrics = MetricsLog(config.out / "metrics.csv", keep_until=start) if accelerator.is_main_process else None
    positions = StreamPositions(start * accum, config.steps * accum, processes, rank, config.batch_size)
    batches = iter(
        DataLoader(
            dataset,
            batch_size=config.batch_size,
            sampler=positions,
            num_workers=config.workers,
            collate_fn=collate_samples,
        )
    )
    accelerator.init_trackers(
        TRACKER, config={k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in record.items()}
    )
    skipped: dict[str, str] = {}
    saved = start if checkpoint else None  # the step of the newest checkpoint of this run
    embedder.train()
    columns = (
        TextColumn("train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not accelerator.is_main_process) as progress:
        task = progress.add_task("train", total=config.steps, completed=min(start, config.steps), loss="-")
        for step in range(start, config.steps):
            totals = torch.zeros(len(METRICS), device=accelerator.device)  # [4]
            for micro in range(step * accum, (step + 1) * accum):
                batch = next(batches)
                for name, reason in batch["skipped"]:
                    if name not in skipped:
                        say(f"skipped {name}: {reason}", markup=False)
                    skipped[name] = reason
                features = batch_features(batch, frozen, cache, accelerator.device)  # [B, N, 3C]
                generator = torch.Generator().manual_seed(stream_seed(config.seed, NOISE_STREAM, micro, rank))
                with accelerator.accumulate(embedder):
                    losses = objective(embedder, features, batch["images"], batch["labels"], generator)  # [4]
                    accelerator.backward(losses[0])
                    optimizer.step()
                    optimizer.zero_grad()
                totals += losses.detach()
            means = accelerator.gather(totals[None] / accum).mean(dim=0).tolist()  # over processes
            if metrics is not None:
                metrics.write(step + 1, means, lr)
            accelerator.log({**dict(zip(METRICS, means, strict=True)), "lr": lr}, step=step + 1)
            progress.update(task, advance=1, loss=f"{means[0]:.4f}")
            if config.save_every and (step + 1) % config.save_every == 0:
                save_checkpoint(config.out, step + 1, accelerator, embedder, optimizer, record)
                saved = step + 1
    if metrics is not None:
        metrics.close()

    # 5. the final checkpoint (so a later run can extend this one) and OUT/embedder.bin
    final = max(start, config.steps)
    if saved != final:
        save_checkpoint(config.out, final, accelerator, embedder, optimizer, record)
    if accelerator.is_main_process:
        write_embedder(config.out, accelerator.unwrap_model(embedder), {**record, "step": final})
    accelerator.wait_for_everyone()
    accelerator.end_training()
    if skipped:
        say(f"{len(skipped)} file(s) failed to decode and were skipped: {', '.join(sorted(skipped))}", markup=False)
    say(f"wrote {config.out / 'embedder.bin'} (step {final}, official embedder layout)", markup=False)
    return TrainResult(config.out, config.out / "embedder.bin", final, lr, report, skipped)
