"""Several processes or machines: an accelerate config in the run dir, and the launcher command.

GPUs go through `accelerate launch --config_file runs/<name>/accelerate_config.yaml`.
DeepSpeed is not a dependency, so zero2 / zero3 map onto FSDP's equivalent sharding
strategies (SHARD_GRAD_OP shards gradients and optimizer state like ZeRO-2;
FULL_SHARD also shards the weights like ZeRO-3). On machines without a GPU,
accelerate would use mpirun; we use `torchrun` (gloo backend) instead, which
needs nothing extra.
"""

from __future__ import annotations

from pathlib import Path

from tunewiz.core.config import RunConfig

CONFIG_NAME = "accelerate_config.yaml"

FSDP_STRATEGY = {"fsdp": "FULL_SHARD", "zero3": "FULL_SHARD", "zero2": "SHARD_GRAD_OP"}


def accelerate_config(cfg: RunConfig, *, cuda: bool, precision: str) -> dict:
    d = cfg.distributed
    out: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "distributed_type": ("MULTI_GPU" if cuda else "MULTI_CPU")
        if d.distributed == "ddp"
        else "FSDP",
        "num_processes": d.num_processes,
        "num_machines": d.num_machines,
        "machine_rank": d.machine_rank,
        "main_training_function": "main",
        "mixed_precision": precision if precision in ("bf16", "fp16") else "no",
        "use_cpu": not cuda,
        "rdzv_backend": "static",
        "same_network": True,
    }
    if d.num_machines > 1:
        out["main_process_ip"] = d.main_process_ip
        out["main_process_port"] = d.main_process_port
    if d.distributed in FSDP_STRATEGY:
        out["fsdp_config"] = {
            "fsdp_version": 1,
            "fsdp_sharding_strategy": FSDP_STRATEGY[d.distributed],
            "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
            # Full state dicts keep checkpoint-N/ and final/ loadable by plain transformers/peft.
            "fsdp_state_dict_type": "FULL_STATE_DICT",
            "fsdp_use_orig_params": True,  # needed for LoRA (frozen and trainable params in one unit)
            "fsdp_cpu_ram_efficient_loading": True,
            "fsdp_sync_module_states": True,
            # Gradient checkpointing is set on the model (tunewiz.core.train.model), not twice.
            "fsdp_activation_checkpointing": False,
        }
    return out


def write_accelerate_config(run_dir: Path, cfg: RunConfig, *, cuda: bool, precision: str) -> Path:
    import yaml

    path = Path(run_dir) / CONFIG_NAME
    path.write_text(
        yaml.safe_dump(accelerate_config(cfg, cuda=cuda, precision=precision)), encoding="utf-8"
    )
    return path


def launcher_command(run_dir: Path, cfg: RunConfig, worker_args: list[str]) -> list[str]:
    import sys

    import torch

    from tunewiz.core.train.model import resolve_precision

    cuda = torch.cuda.is_available()
    d = cfg.distributed
    path = write_accelerate_config(
        run_dir, cfg, cuda=cuda, precision=resolve_precision(cfg.model.precision)
    )
    if cuda:
        return [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(path),
            *worker_args,
        ]
    per_node = max(1, d.num_processes // max(1, d.num_machines))
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={per_node}"]
    cmd += [f"--nnodes={d.num_machines}", f"--node-rank={d.machine_rank}"]
    if d.num_machines > 1:
        cmd += [f"--master-addr={d.main_process_ip}", f"--master-port={d.main_process_port}"]
    else:
        cmd += ["--standalone"]
    return cmd + worker_args
