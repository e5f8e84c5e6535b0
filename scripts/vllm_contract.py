"""What the pinned vLLM makes of trace-build's requests and launcher command, by vLLM's own code.

Run by the Python of the vLLM contract environment (scripts/install-vllm-contract.sh), not the
project's: it imports nothing of trace-build.

    python scripts/vllm_contract.py IN.json OUT.json

IN.json: {"requests": [chat request bodies], "commands": [argv of `vllm serve ...`]}
OUT.json: per request, what vLLM's OpenAI server would do before the model runs:
  - ChatCompletionRequest validation (pydantic; a failure is HTTP 400),
  - the fields it ignores (unknown names are dropped silently) and the deprecated ones it reads,
  - SamplingParams from the request (its own argument checks),
  - structured-output validation with backend "auto" (xgrammar, falling back to llguidance:
    the default of `vllm serve`), then the grammar compiled by the backend it chose, against a
    tiny byte-level tokenizer built here (no model is loaded; the grammar does not depend on
    the vocabulary beyond that);
and per command: vLLM's own `vllm serve` argument parser and its checks, the warnings it logs,
and the values it parsed.
"""
from __future__ import annotations

import json
import logging
import os
import sys
import types
import warnings


def tiny_tokenizer():
    """A Hugging Face fast byte-level BPE tokenizer (the kind of Qwen2's), trained on a few
    strings: vLLM's grammar backends need one, and none may be downloaded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(['{"score": 10, "explanation": "text"}', "Answer the question. 回答问题。"], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")


class Requests:
    def __init__(self):
        from vllm.config import StructuredOutputsConfig
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        self.request_model = ChatCompletionRequest
        self.tokenizer = tiny_tokenizer()
        self.so_config = StructuredOutputsConfig(backend="auto")  # `vllm serve`'s default
        hf_config = types.SimpleNamespace(model_type="qwen2")
        self.model_config = types.SimpleNamespace(is_diffusion=False, hf_config=hf_config)
        self.vllm_config = types.SimpleNamespace(structured_outputs_config=self.so_config,
                                                 model_config=self.model_config, speculative_config=None)
        self.backends: dict = {}
        self.compiled: dict = {}
        fields = ChatCompletionRequest.model_fields
        self.known = set(fields) | {f.alias for f in fields.values() if f.alias}
        self.deprecated = {name for name, f in fields.items() if f.deprecated}

    def backend(self, name: str):
        from vllm.v1.structured_output.backend_guidance import GuidanceBackend
        from vllm.v1.structured_output.backend_xgrammar import XgrammarBackend

        if name not in self.backends:
            cls = {"xgrammar": XgrammarBackend, "guidance": GuidanceBackend}[name]
            self.backends[name] = cls(vllm_config=self.vllm_config, tokenizer=self.tokenizer,
                                      vocab_size=len(self.tokenizer))
        return self.backends[name]

    def check(self, body: dict) -> dict:
        from vllm.v1.structured_output.request import get_structured_output_key

        out = {"ignored": sorted(set(body) - self.known), "deprecated": sorted(set(body) & self.deprecated)}
        try:
            request = self.request_model.model_validate(body)
            budget = body.get("max_completion_tokens") or body.get("max_tokens") or 16
            params = request.to_sampling_params(budget, {})
            out["sampling"] = {k: getattr(params, k) for k in ("temperature", "top_p", "top_k", "min_p",
                                                               "repetition_penalty", "seed", "max_tokens")}
            params._validate_structured_outputs(self.model_config, self.so_config, self.tokenizer)
            so = params.structured_outputs
            if so is not None:
                out["backend"] = so._backend
                key = (so._backend, *get_structured_output_key(so))
                if key not in self.compiled:
                    self.backend(so._backend).compile_grammar(key[1], key[2])
                    self.compiled[key] = True
        except Exception as exc:  # what vLLM's server turns into an error response
            out.update(status="refused", error=f"{type(exc).__name__}: {str(exc)[:500]}")
            return out
        out["status"] = "ok"
        return out


# What Qwen2 instruct models ship in generation_config.json: the defaults `vllm serve` applies
# to every request that does not say otherwise, unless started with --generation-config vllm.
QWEN2_GENERATION_CONFIG = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                           "repetition_penalty": 1.05, "bos_token_id": 151643, "eos_token_id": [151645, 151643]}


def tiny_model_folder() -> str:
    """A Qwen2 model folder of a few kilobytes (config, generation config, tokenizer; no
    weights): what vLLM reads to build its model config, in place of the served model."""
    import tempfile

    from transformers import Qwen2Config

    folder = tempfile.mkdtemp(prefix="vllm-contract-")
    Qwen2Config(vocab_size=512, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                num_key_value_heads=1, max_position_embeddings=4096,
                architectures=["Qwen2ForCausalLM"]).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    with open(f"{folder}/generation_config.json", "w") as f:
        json.dump(QWEN2_GENERATION_CONFIG, f)
    return folder


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def check_command(argv: list[str]) -> dict:
    """`vllm serve ...` through the parser `vllm` itself builds, its own argument checks, and
    the model config it builds from them (on a tiny Qwen2 folder in place of the model): its
    deprecation warnings, and the sampling defaults the server would apply to every request."""
    import vllm
    from vllm.entrypoints.cli.serve import ServeSubcommand
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    from vllm import platforms
    from vllm.platforms.cpu import CpuPlatform

    if platforms.current_platform.is_unspecified():  # no GPU here: the parser asks the platform for defaults
        platforms.current_platform = CpuPlatform()
    if argv[:2] != ["vllm", "serve"]:
        return {"status": "refused", "error": f"not a `vllm serve` command: {argv[:2]}"}
    # The platform's compiled kernels are loaded before the capture: what vLLM logs (once) of this
    # machine's CPU, e.g. no AVX-512 build in the wheel, says nothing of the command.
    platforms.current_platform.import_kernels()
    captured = Captured()
    logging.getLogger("vllm").addHandler(captured)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parser = FlexibleArgumentParser(prog="vllm")
            subparsers = parser.add_subparsers(required=False, dest="subparser")
            serve = ServeSubcommand()
            serve.subparser_init(subparsers).set_defaults(dispatch_function=serve.cmd)
            args = parser.parse_args(argv[1:])
            serve.validate(args)
            parsed = {n: getattr(args, n, None) for n in PARSED}
            args.model = tiny_model_folder()  # as `vllm serve` does with its model_tag
            model_config = vllm.AsyncEngineArgs.from_cli_args(args).create_model_config()
    except SystemExit as exc:  # argparse's way of refusing
        return {"status": "refused", "error": f"argument parser exited with {exc.code}",
                "warnings": captured.messages}
    except Exception as exc:
        return {"status": "refused", "error": f"{type(exc).__name__}: {exc}", "warnings": captured.messages}
    finally:
        logging.getLogger("vllm").removeHandler(captured)
    return {"status": "ok", "warnings": captured.messages + [str(w.message) for w in caught], "parsed": parsed,
            "model_sampling_defaults": model_config.get_diff_sampling_param()}


PARSED = ("model_tag", "host", "port", "tensor_parallel_size", "enable_prefix_caching", "served_model_name",
          "generation_config", "max_num_seqs", "api_key")


def main(argv: list[str]) -> int:
    os.environ["HF_HUB_OFFLINE"] = "1"  # nothing is downloaded: every file vLLM reads is made here
    source, target = argv
    with open(source, encoding="utf-8") as f:
        todo = json.load(f)
    import vllm

    requests = Requests()
    report = {"vllm": vllm.__version__,
              "requests": [requests.check(body) for body in todo.get("requests", [])],
              "commands": [check_command(cmd) for cmd in todo.get("commands", [])]}
    with open(target, "w", encoding="utf-8") as f:
        json.dump(report, f, ensure_ascii=False, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
