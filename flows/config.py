"""The one typed configuration of a trace build, loaded from YAML and overridable by parameters.

Secrets are not configuration: the API key is read from the environment variable named here, or
from a Prefect Secret block named here, at run time, and is never stored in the config itself.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from flows.errors import UserError
from flows.suites import ALL_DEFAULTS, SUITES, suite_names
from flows.train.methods import METHODS


class ConfigError(UserError, ValueError):
    """A config file or override is invalid; the message is one line for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# The sampling fields a config may add to every request, beside temperature and top_p: vLLM's
# (top_k, min_p, repetition_penalty), llama.cpp's name for the last (repeat_penalty), and
# OpenAI's penalties. Any other name is a config mistake.
SAMPLING_EXTRA_FIELDS = ("top_k", "min_p", "repetition_penalty", "repeat_penalty", "presence_penalty",
                         "frequency_penalty")


OVERSUBSCRIPTION = 1.25  # max_in_flight: auto, per server sequence
SEEDS_PER_SLOT = 8  # seeds_in_flight: auto, per request slot of the client


def _count_or_auto(value):
    if value != "auto" and value < 1:
        raise ValueError("must be at least 1, or auto")
    return value


CountOrAuto = Annotated[int | Literal["auto"], AfterValidator(_count_or_auto)]


def _not_a_file(value):
    if value is not None:
        path = Path(value)
        blocker = next((p for p in (path, *path.parents) if p.exists()), None)
        if blocker is not None and not blocker.is_dir():
            where = "" if blocker == path else f" ({blocker} is a file)"
            raise ValueError(f"{value} is not a folder{where}; give a folder (a new or an existing one)")
    return value


# An output folder: refused, before anything runs, where a file is in the way.
Folder = Annotated[str, AfterValidator(_not_a_file)]


class LLMConfig(_Strict):
    base_urls: list[str] = Field(default_factory=list, description="OpenAI-compatible /v1 URLs (replicas of one model)")
    backend: Literal["simulated", "embedded", "vllm"] | None = Field(None, description="start this backend when no base URL is given")
    backend_model: str | None = Field(None, description="model the launched backend serves (embedded: qwen2.5-coder-1.5b, qwen2.5-coder-0.5b, smollm2-135m)")
    model: str | None = Field(None, description="model name to request; default: the first one the server lists")
    dialect: Literal["json_schema", "json_object_schema", "json_object", "none"] | None = Field(
        None, description="how the server takes a JSON schema; default from the backend profile")
    max_in_flight: CountOrAuto = Field(
        64, description="requests in flight per endpoint; auto: 1.25 x max_num_seqs, so that the server's own "
                        "queue always holds the next request when a sequence finishes")
    timeout_s: float = Field(300.0, gt=0)
    max_attempts: int = Field(6, ge=1, description="tries per request on transient errors")
    parse_attempts: int = Field(3, ge=1, description="tries per request when the answer is unusable")
    backoff_s: float = Field(0.5, ge=0)
    api_key_env: str = "OPENAI_API_KEY"
    api_key_secret: str | None = Field(None, description="name of a Prefect Secret block holding the key")
    cache_path: str | None = Field(None, description="request cache file; default <run>/llm-cache.sqlite")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling, sent with every request")
    sampling_extra: dict[str, float] = Field(
        default_factory=dict, description="more sampling fields sent with every request, for servers that take "
                                          "them: top_k, min_p, repetition_penalty (vLLM), repeat_penalty "
                                          "(llama.cpp), presence_penalty, frequency_penalty")
    # The launched vLLM server (backend: vllm); a server you started yourself ignores these.
    tensor_parallel_size: int = Field(4, ge=1, description="backend vllm: GPUs per replica (Qwen2-72B-Instruct "
                                                           "in bf16 needs 4 x 80 GB)")
    max_num_seqs: int | None = Field(None, ge=1, description="sequences the server runs at once (vLLM's "
                                                             "--max-num-seqs): backend vllm starts with it "
                                                             "(default: max_in_flight); for base_urls, say "
                                                             "what your servers run with")
    host: str = Field("127.0.0.1", description="backend vllm: the address it listens on (0.0.0.0 for "
                                               "replicas other machines reach)")

    @model_validator(mode="after")
    def _auto_needs_the_server(self):
        if self.max_in_flight == "auto" and self.max_num_seqs is None:
            raise ValueError("max_in_flight: auto needs max_num_seqs (the sequences the server runs at once)")
        return self

    @property
    def in_flight_per_endpoint(self) -> int:
        """Requests kept in flight per endpoint. Over-subscribed by a quarter under auto: vLLM
        queues what it cannot run yet, so a finished sequence is replaced at once, without
        waiting for the client's turnaround."""
        if self.max_in_flight == "auto":
            return math.ceil(OVERSUBSCRIPTION * self.max_num_seqs)
        return self.max_in_flight

    @property
    def server_seqs(self) -> int:
        """The sequences a vLLM server launched for the run runs at once."""
        return self.max_num_seqs or self.in_flight_per_endpoint

    @field_validator("sampling_extra")
    @classmethod
    def _known_sampling(cls, value):
        unknown = sorted(set(value) - set(SAMPLING_EXTRA_FIELDS))
        if unknown:
            raise ValueError(f"unknown sampling field {unknown[0]!r} (one of {', '.join(SAMPLING_EXTRA_FIELDS)})")
        return value


class SamplingConfig(_Strict):
    """Temperatures and token budgets per call kind."""

    tag_temperature: float = 0.0
    expand_temperature: float = 0.7
    structure_temperature: float = 0.0
    qc_temperature: float = 0.0
    respond_temperature: float = 0.7
    grade_temperature: float = 0.0
    worsen_temperature: float = 0.7
    edit_temperature: float = 0.7
    tag_max_tokens: int = 512
    expand_max_tokens: int = 1024
    structure_max_tokens: int = 1536
    qc_max_tokens: int = 384
    respond_max_tokens: int = 1536
    grade_max_tokens: int = 1536
    worsen_max_tokens: int = 1536
    edit_max_tokens: int = 768
    checks_temperature: float = 0.0
    checks_max_tokens: int = 1024


class PipelineConfig(_Strict):
    seed: int = Field(0, description="seed for every random draw and every sampled request")
    shard_size: int = Field(16, ge=1, description="seeds per shard (the unit of storage and resume)")
    max_seed_chars: int = Field(8000, ge=1, description="longer seeds are rejected (seed_too_long)")
    constraint_counts: dict[int, float] | None = Field(
        None, description="distribution of constraints per instruction; default: the paper's train histogram")
    max_constraints: int = Field(15, ge=1)
    preference_data: bool = Field(True, description="build DPO pairs and IOPO quadruples after stage 5")
    rule_checks: bool = Field(True, description="extract rule checks for checkable constraints in stage 3")
    rule_policy: Literal["both", "judge", "rule"] = Field(
        "both", description="who decides a checkable constraint: both (score 10 and rule passed), judge, rule")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)

    @field_validator("constraint_counts")
    @classmethod
    def _positive(cls, value):
        if value is not None and (not value or any(k < 1 or w < 0 for k, w in value.items()) or sum(value.values()) <= 0):
            raise ValueError("needs counts >= 1 with non-negative weights that sum above 0")
        return value


class ExecutionConfig(_Strict):
    """How a build is run: none of it changes a row, so none of it is in a stage's fingerprint."""

    window_size: int = Field(1024, ge=1, description="seeds tracked together; a Prefect task per window")
    seeds_in_flight: CountOrAuto = Field(
        "auto", description="seeds in the stages at once (bounds memory); auto: 8 per request slot of the "
                            "LLM client (max_in_flight x replicas), enough rows to keep every slot's next "
                            "request waiting")
    max_internal_errors: int = Field(3, ge=0, description="rows a stage's code may fail on (a bug, reason "
                                                          "internal_error) before the build stops; any such row "
                                                          "makes the build exit nonzero, and is retried next run")
    ranges: int = Field(1, ge=1, le=256, description="split the seeds into this many ranges, each built by its "
                                                     "own flow run on the work pool (any worker, any machine)")
    range_deployment: str = Field("trace-build-range/local", description="deployment that builds one range")
    range_endpoints: list[list[str]] = Field(
        default_factory=list, description="LLM base URLs per range (range i uses group i mod len); "
                                          "default: llm.base_urls for every range")

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, data):
        if isinstance(data, dict) and "windows_in_flight" in data:
            raise ValueError("windows_in_flight is now seeds_in_flight: the seeds in the stages at once, or auto")
        return data

    def seeds_at_once(self, slots: int) -> int:
        """The seeds admitted to the stages at once, for a client with `slots` requests in flight.
        A row waits for its shard-mates and sends one request at a time, so many more rows than
        slots keep a request waiting for every slot; but every seed in flight is walked by each
        full pass of the garbage collector, which stalls the event loop (flows/garbage.py), and
        held in memory, so not many more."""
        return SEEDS_PER_SLOT * slots if self.seeds_in_flight == "auto" else self.seeds_in_flight


class SplitsConfig(_Strict):
    eval_size: int = Field(100, ge=0, description="rows in the held-out eval split")
    eval_fraction: float = Field(0.1, ge=0, le=1, description="never more than this share of seeds in eval")
    weights: dict[str, float] = Field(default_factory=lambda: {"sft": 1.0, "dpo": 1.0, "iopo": 1.0},
                                      description="how train seeds are shared among sft, dpo and iopo")
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard of character 5-grams")
    decontaminate_official_eval: bool = Field(True, description="drop train rows that match the official Trace eval set")


class TrainingConfig(_Strict):
    """The training job a finished build starts (a Prefect deployment on the GPU pool)."""

    trigger: bool = Field(False, description="start the training deployment when the build is done")
    deployment: str = Field("iopo-train/gpu", description="flow-name/deployment-name to run")
    method: Literal[METHODS] = Field("iopo", description="training method; its split must have rows")  # type: ignore[valid-type]
    parameters: dict = Field(default_factory=dict, description="training settings for the run (configs/train.yaml keys)")


class RunConfig(_Strict):
    seeds: str = "data/seeds"
    text_field: str = "text"
    limit: int | None = Field(None, ge=1)
    out: Folder = "runs/latest"
    prompts_dir: str | None = Field(None, description="prompt templates to use instead of the shipped prompts/")
    prompt_set: str | None = Field(None, description="a prompt set shipped in prompts/<name>/ (e.g. small: worked "
                                                     "examples for small models); it replaces the templates it has")
    llm: LLMConfig = Field(default_factory=LLMConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    execution: ExecutionConfig = Field(default_factory=ExecutionConfig)
    splits: SplitsConfig = Field(default_factory=SplitsConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)


def request_sampling(cfg: RunConfig) -> dict[str, dict]:
    """Per call kind, the sampling its requests send: its temperature and token budget, and
    what the LLM config adds to every request (for the manifest)."""
    sampling = cfg.pipeline.sampling.model_dump()
    kinds = [name.removesuffix("_temperature") for name in sampling if name.endswith("_temperature")]
    return {kind: {"temperature": sampling[f"{kind}_temperature"], "max_tokens": sampling[f"{kind}_max_tokens"],
                   "top_p": cfg.llm.top_p, **cfg.llm.sampling_extra} for kind in kinds}


def one_line(exc: ValidationError, source: str, given=None) -> str:
    """A pydantic validation error as the one line a user reads; `given`: the value of an option."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(root)"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    value = f" (given {given!r})" if given is not None and err["type"] != "value_error" else ""
    message = err["msg"].removeprefix("Value error, ")  # our own validators' words
    if err["type"] == "missing" and len(err["loc"]) == 1:  # a top-level setting: an option can give it
        message = f"required: give --{where.replace('_', '-')} or set {where}: in the config file"
    return f"{source}: {where}: {message}{value}{more}"


class EvalConfig(_Strict):
    """An evaluation: the suite, the model under test, the judge (Trace), and how they are asked."""

    suite: str = Field(
        "trace", description="trace: the Trace protocol (LLM judge, IF-S / IF-M); ifeval: IFEval's 541 prompts "
                             "decided by rules (strict / loose, prompt- and instruction-level); cfbench: CFBench "
                             "(judge, CSR / ISR / PSR); complexbench: ComplexBench (rules and judge, DRFR); all: "
                             "every suite whose data is present, and the paper's Table 3")
    data: str | None = Field(None, description="trace: official-layout eval JSONL or a run folder; ifeval: an "
                                               "IFEval input_data JSONL; default: the suite's official set; "
                                               "cfbench, complexbench: their official data file")
    cfbench_data: str | None = Field(None, description="CFBench's data/cfbench_data.json (not shipped: no licence); "
                                                       "the cfbench suite's file when data is not given, and what "
                                                       "makes --suite all run CFBench")
    complexbench_data: str | None = Field(None, description="ComplexBench's data/data_final.json (not shipped); the "
                                                            "complexbench suite's file when data is not given, and "
                                                            "what makes --suite all run ComplexBench")
    lang: Literal["zh", "en"] = Field("zh", description="complexbench: the Chinese instructions and questions, or "
                                                        "the English translation (instruction_en, question_en)")
    responses: str | None = Field(None, description="ifeval: score these responses (JSON lines with prompt and "
                                                    "response) instead of asking a model")
    out: Folder | None = Field(None, description="results folder; default runs/eval (trace), runs/eval-<suite> (the "
                                              "others; all: one folder per suite inside it)")
    limit: int | None = Field(None, ge=1, description="evaluate the first N rows only")
    sample: int | None = Field(None, ge=1, description="evaluate N rows spread evenly over the file")
    model: LLMConfig = Field(default_factory=LLMConfig, description="the model under test")
    judge: LLMConfig | None = Field(None, description="the judge; default: the model under test's server")
    answer_temperature: float | None = Field(None, ge=0, description="default 0.1 (trace, the paper's), 0 (the "
                                                                     "others)")
    answer_max_tokens: int = Field(2048, ge=1)
    judge_temperature: float = 0.0
    judge_max_tokens: int = Field(2048, ge=1)
    checks_max_tokens: int = Field(1024, ge=1)
    seed: int = 0
    rule_checks: bool = Field(True, description="extract rule checks (once, cached) and run them beside the judge")
    checks_cache: str | None = Field(
        None, description="request cache of the check extraction, shared by the evaluations that use it (same "
                          "judge: a row's checks are paid for once); default: eval-checks.sqlite beside `out`")
    rule_policy: Literal["both", "judge", "rule"] = "both"

    @field_validator("suite")
    @classmethod
    def _known_suite(cls, value: str) -> str:
        if value not in suite_names():
            raise ValueError(f"unknown suite {value!r}: one of {', '.join(suite_names())}")
        return value

    @model_validator(mode="after")
    def _suite_defaults(self) -> "EvalConfig":
        # the suite's results folder and answer temperature (Trace: the paper's 0.1; the others
        # greedy), unless set; "all" runs each suite under its own, in <out>/<suite>
        defaults = SUITES[self.suite].defaults if self.suite in SUITES else ALL_DEFAULTS
        for key, value in defaults.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.judge is not None and self.suite in SUITES and not SUITES[self.suite].judged:
            raise ValueError(f"judge: the {self.suite} suite has no judge (its instructions are decided by rules)")
        if self.responses and self.suite != "ifeval":
            raise ValueError("responses: only the ifeval suite scores a responses file")
        if self.data and self.suite == "all":
            raise ValueError("data: --suite all takes each benchmark's file on its own (cfbench_data, "
                             "complexbench_data); Trace and IFEval use their official sets")
        return self


def eval_overrides(*, base_urls=None, model=None, backend=None, backend_model=None, judge_base_urls=None,
                   judge_model=None, judge_backend=None, judge_backend_model=None, judge_api_key_env=None,
                   **top) -> dict:
    """Dotted EvalConfig overrides from command-line or flow parameters (None: not given). The
    judge section exists only when something about the judge is given."""
    overrides = {**top, **endpoint_overrides("model", base_urls=base_urls, backend=backend,
                                             backend_model=backend_model, model=model)}
    if judge_base_urls or judge_backend or judge_model:
        overrides |= endpoint_overrides("judge", base_urls=judge_base_urls, backend=judge_backend,
                                        backend_model=judge_backend_model, model=judge_model)
        overrides["judge.api_key_env"] = judge_api_key_env
    return overrides


class _Default:
    """An override that takes the config file's value away, so that the field's default applies."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT = _Default()


def endpoint_overrides(section: str, *, base_urls=None, backend=None, backend_model=None, model=None) -> dict:
    """Overrides of one LLM section (llm, model, judge) from options (None: not given). An endpoint
    given explicitly replaces the config file's whole endpoint: base URLs drop its backend; a
    backend drops its base URLs and what described them (dialect, requested model name) unless given.
    Base URLs and a backend together: the URLs win."""
    overrides = {f"{section}.base_urls": base_urls, f"{section}.backend": backend,
                 f"{section}.backend_model": backend_model, f"{section}.model": model}
    if base_urls:
        overrides |= {f"{section}.backend": DEFAULT, f"{section}.backend_model": DEFAULT}
    elif backend:
        overrides |= {f"{section}.base_urls": DEFAULT, f"{section}.dialect": DEFAULT,
                      f"{section}.backend_model": backend_model or DEFAULT, f"{section}.model": model or DEFAULT}
    return overrides


def in_flight(value: str) -> int | str:
    """The command line's max_in_flight: a number, or auto."""
    return value if value == "auto" else int(value)


# The options of a build, the same for `trace-build run` and the trace-build flow: name (the flow
# parameter), where it goes in RunConfig, and how the command line takes it.
BUILD_OPTIONS: dict[str, tuple[str, dict]] = {
    "seeds": ("seeds", {"help": "a JSONL/Parquet/CSV file or a folder of them (default data/seeds)"}),
    "limit": ("limit", {"type": int, "help": "use only the first N seeds"}),
    "out": ("out", {"help": "run folder (default runs/latest); rerunning resumes it"}),
    "base_urls": ("llm.base_urls", {"flag": "--base-url", "action": "append", "metavar": "URL",
                                    "help": "OpenAI-compatible /v1 URL; repeat for replicas"}),
    "backend": ("llm.backend", {"choices": ["embedded", "simulated", "vllm"], "help": "start this backend for the run"}),
    "backend_model": ("llm.backend_model", {"help": "model the started backend serves"}),
    "model": ("llm.model", {"help": "model name to request (default: the first the server lists)"}),
    "max_in_flight": ("llm.max_in_flight", {"type": in_flight, "metavar": "N|auto",
                                            "help": "requests in flight per endpoint; auto: 1.25 x the server's "
                                                    "max_num_seqs"}),
    "ranges": ("execution.ranges", {"type": int, "help": "build the seeds in N ranges (the flow: N flow runs on the "
                                                         "work pool; the command line: one after another)"}),
    "trigger_training": ("training.trigger", {"action": "store_const", "const": True,
                                              "help": "start the training deployment on the splits when done "
                                                      "(needs a Prefect server: trace-build up)"}),
    "training_method": ("training.method", {"choices": list(METHODS), "help": "the method it trains (default iopo)"}),
}


def build_overrides(**options) -> dict:
    """Dotted RunConfig overrides from build options (None: not given); an endpoint given replaces
    the config's (endpoint_overrides)."""
    unknown = set(options) - set(BUILD_OPTIONS)
    if unknown:
        raise TypeError(f"not build options: {sorted(unknown)}")
    overrides = {BUILD_OPTIONS[name][0]: value for name, value in options.items()}
    return overrides | endpoint_overrides("llm", **{name: options.get(name) for name in
                                                    ("base_urls", "backend", "backend_model", "model")})


def load_config(path: str | Path | None = None, overrides: dict | None = None, model: type = RunConfig):
    """Read a YAML config (optional), apply dotted overrides like {"llm.base_urls": [...]}, and
    validate it as `model` (RunConfig, or EvalConfig for an evaluation). Precedence: an override
    (a command-line option, a flow parameter) beats the file, which beats the field's default; an
    override of None is not given, one of DEFAULT takes the file's value away."""
    data: dict = {}
    source = "config"
    if path is not None:
        source = str(path)
        try:
            loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except IsADirectoryError:
            raise ConfigError(f"{path}: is a folder, not a config file") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    given = {dotted: value for dotted, value in (overrides or {}).items() if value is not None}
    for dotted, value in given.items():
        _set_dotted(data, dotted, value)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        where = ".".join(str(p) for p in exc.errors()[0]["loc"])
        if where in given:  # the user gave this value as an option, not in the file
            raise ConfigError(one_line(exc, "option", given=given[where])) from None
        raise ConfigError(one_line(exc, source)) from None


def _set_dotted(data: dict, dotted: str, value) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):  # absent, null, or a switch like `true`
            if value is DEFAULT:
                return
            node[part] = {}
        node = node[part]
    if value is DEFAULT:
        node.pop(leaf, None)
    else:
        node[leaf] = value
