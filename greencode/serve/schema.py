"""Request bodies of `greencode serve` (TGI / HF Inference API shape) and their validation messages.

Types are strict: "15" is not an integer and 1 is not a boolean, so a client's mistake comes back as
a 422 naming the field instead of being guessed at. Unknown generation parameters that TGI accepts
(top_k, repetition_penalty, ...) are accepted and reported back as ignored.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from greencode.config import MAX_SEED, MAX_TEMPERATURE
from greencode.exits.policies import POLICY_FORMS
from greencode.serve.guard import TGI_BODY

MAX_STOP_SEQUENCES = 32  # editors send their templates' stop lists (Continue's Qwen template: 9 strings)
MAX_STOP_CHARS = 256
MAX_POLICY_CHARS = 64
MIN_TEMPERATURE = 1e-3


def _check_encodable(text: str, what: str = "") -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{what}holds an unpaired surrogate ({text[exc.start]!r} at {exc.start}); send Unicode text, "
                         "each surrogate pair whole") from None


class GreencodeParameters(BaseModel):
    """`parameters.greencode`: this request's exit policy, overriding the server's default."""

    model_config = ConfigDict(strict=True, extra="forbid")

    policy: Optional[str] = Field(None, min_length=1, max_length=MAX_POLICY_CHARS,
                                  description=POLICY_FORMS)
    threshold: Optional[float] = Field(None, allow_inf_nan=False,  # its range is the policy's (greencode.exits.policies)
                                       description="the policy's threshold (T, P or H) for this request")


class GenerateParameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    max_new_tokens: Optional[int] = Field(None, ge=1, description="capped at the server's [serve].max_new_tokens_cap")
    temperature: Optional[float] = Field(None, ge=0.0, le=MAX_TEMPERATURE, allow_inf_nan=False, description="0 = greedy")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    do_sample: Optional[bool] = Field(None, description="false forces greedy decoding")
    seed: Optional[int] = Field(None, ge=0, le=MAX_SEED)
    stop: Optional[list[str]] = Field(None, max_length=MAX_STOP_SEQUENCES)
    return_full_text: Optional[bool] = None
    greencode: Optional[GreencodeParameters] = None

    @model_validator(mode="after")
    def _usable(self) -> "GenerateParameters":
        if self.temperature is not None and 0 < self.temperature < MIN_TEMPERATURE:
            # logits / 1e-40 overflows to inf and sampling fails; such a temperature means greedy anyway
            raise ValueError(f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE}")
        for text in self.stop or []:
            if not text or len(text) > MAX_STOP_CHARS:
                raise ValueError(f"each stop sequence must have 1..{MAX_STOP_CHARS} characters")
            _check_encodable(text, "a stop sequence ")
        return self

    @property
    def ignored(self) -> list[str]:
        return sorted(self.model_extra or {})


class GenerateRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    suffix: Optional[str] = Field(None, description="the code after the cursor (OpenAI and Ollama routes)")
    inputs: str = Field(..., description="the code before the cursor (or a FIM prompt); empty only with a suffix")
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: Optional[bool] = Field(None, description="HF Inference API routes only: answer with SSE")

    @field_validator("suffix", "inputs")
    @classmethod
    def _encodable(cls, text: str | None) -> str | None:
        """JSON may escape half a surrogate pair ("\\ud800"): no tokenizer can take such text."""
        if text is not None:
            _check_encodable(text)
        return text

    @field_validator("inputs")
    @classmethod
    def _something_to_complete(cls, inputs: str, info: ValidationInfo) -> str:
        """A cursor at the top of a file has no text before it: with a suffix that is a FIM request (suffix is
        declared first, so it is validated by now)."""
        if not inputs and not info.data.get("suffix"):
            raise ValueError("String should have at least 1 character (it may be empty only with a suffix)")
        return inputs

    @model_validator(mode="before")
    @classmethod
    def _unnest_llm_ls_parameters(cls, data: Any) -> Any:
        """llm-ls sends {"parameters": {"parameters": {...}}} when the user's request body has no
        `parameters`; the inner object wins over keys beside it."""
        if isinstance(data, dict) and isinstance(data.get("parameters"), dict):
            outer = data["parameters"]
            if isinstance(outer.get("parameters"), dict):
                merged = {key: value for key, value in outer.items() if key != "parameters"}
                merged.update(outer["parameters"])
                data = {**data, "parameters": merged}
        return data


# -- OpenAI and Ollama bodies: their own field names, checked by the same GenerateParameters ----------

class OpenAIRequest(BaseModel):
    """What OpenAI's completion and chat bodies share: the sampling fields, and how they become the shared
    GenerateRequest's parameters. Unknown fields are accepted and reported ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: Optional[str] = None
    max_tokens: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: Optional[Union[str, list[str]]] = None
    stream: Optional[bool] = None
    seed: Optional[int] = None
    n: Optional[int] = None
    greencode: Optional[GreencodeParameters] = None

    @model_validator(mode="after")
    def _one_choice(self):
        if self.n not in (None, 1):
            raise ValueError(f"n: only n = 1 is supported (got {self.n})")
        return self

    def parameters(self, max_new_tokens: Optional[int]) -> dict:
        """The GenerateRequest parameters (validated there, so every route checks the same way)."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        parameters = {"max_new_tokens": max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                      "stop": stop, "seed": self.seed, "greencode": self.greencode, **(self.model_extra or {})}
        parameters = {key: value for key, value in parameters.items() if value is not None}
        if "logprobs" in self.model_fields_set:
            parameters["logprobs"] = getattr(self, "logprobs")  # 0, false or null: taken, and said to be ignored
        return parameters


class CompletionRequest(OpenAIRequest):
    """OpenAI `POST /v1/completions` (legacy completions)."""

    prompt: Union[str, list[str]]
    suffix: Optional[str] = None
    best_of: Optional[int] = None
    echo: Optional[bool] = None
    logprobs: Optional[int] = None

    @model_validator(mode="after")
    def _supported(self) -> "CompletionRequest":
        if self.best_of not in (None, 1):
            raise ValueError(f"best_of: not supported (only 1); got {self.best_of}")
        if self.echo:
            raise ValueError("echo: not supported; the answer is the completion only")
        if self.logprobs:
            raise ValueError("logprobs: not supported; leave it out or send 0")
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError(f"prompt: one prompt per request (a string or a one-element list), got {len(self.prompt)}")
        return self

    def to_generate(self) -> dict:
        """The body of the shared GenerateRequest."""
        prompt = self.prompt[0] if isinstance(self.prompt, list) else self.prompt
        return {"inputs": prompt, "suffix": self.suffix, "parameters": self.parameters(self.max_tokens)}


class OllamaOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    num_predict: Optional[int] = None  # -1 (endless) and -2 (fill the context) mean: up to the server's cap
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    stop: Optional[list[str]] = None
    seed: Optional[int] = None


class OllamaGenerateRequest(BaseModel):
    """Ollama `POST /api/generate`. Unknown fields (keep_alive, format, system, ...) are reported ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: Optional[str] = None
    prompt: str = ""
    suffix: Optional[str] = None
    raw: Optional[bool] = None
    stream: bool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    greencode: Optional[GreencodeParameters] = None

    def to_generate(self, max_new_tokens_cap: int) -> dict:
        options = self.options
        max_new_tokens = options.num_predict
        if max_new_tokens in (-1, -2):
            max_new_tokens = max_new_tokens_cap
        parameters = {"max_new_tokens": max_new_tokens, "temperature": options.temperature, "top_p": options.top_p,
                      "stop": options.stop, "seed": options.seed, "greencode": self.greencode,
                      **{f"options.{key}": value for key, value in (options.model_extra or {}).items()},
                      **{key: value for key, value in (self.model_extra or {}).items()}}
        return {"inputs": self.prompt, "suffix": self.suffix,
                "parameters": {key: value for key, value in parameters.items() if value is not None}}


# What each shared parameter is called in each protocol, for error messages.
PROTOCOL_NAMES = {
    "openai": {"inputs": "prompt", "parameters.max_new_tokens": "max_tokens", "parameters.temperature": "temperature",
               "parameters.top_p": "top_p", "parameters.stop": "stop", "parameters.seed": "seed",
               "parameters.greencode": "greencode", "parameters": ""},
    "ollama": {"inputs": "prompt", "parameters.max_new_tokens": "options.num_predict",
               "parameters.temperature": "options.temperature", "parameters.top_p": "options.top_p",
               "parameters.stop": "options.stop", "parameters.seed": "options.seed",
               "parameters.greencode": "greencode", "parameters": ""},
}


def describe_protocol_errors(errors: list[dict], protocol: str, expected: str = "") -> str:
    """describe_errors, naming the protocol's fields (max_tokens, not parameters.max_new_tokens)."""
    names = PROTOCOL_NAMES[protocol]
    renamed = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ())]
        for size in range(len(location), 0, -1):
            key = ".".join(location[:size])
            if key in names:
                location = (names[key].split(".") if names[key] else []) + location[size:]
                break
        renamed.append({**error, "loc": tuple(location)})
    return describe_errors(renamed, expected)


def describe_errors(errors: list[dict], expected: str = "") -> str:
    """One line naming each bad field: 'parameters.max_new_tokens: Input should be a valid integer'.
    `expected`: the route's body in words, for a body that is not JSON or not an object."""
    expected = expected or TGI_BODY
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        message = error.get("msg", "invalid value")
        if error.get("type") == "value_error":
            message = message.removeprefix("Value error, ")
        elif error.get("type") == "json_invalid":
            message = (f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')}); "
                       f"send a JSON object {expected}")
            location = []
        elif not location:
            message = f"the body must be a JSON object {expected}"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(dict.fromkeys(parts)) or "invalid request"
