"""Request bodies of `greencode serve` (TGI / HF Inference API shape) and their validation messages.

Types are strict: "15" is not an integer and 1 is not a boolean, so a client's mistake comes back as
a 422 naming the field instead of being guessed at. Unknown generation parameters that TGI accepts
(top_k, repetition_penalty, ...) are accepted and reported back as ignored.
"""

from __future__ import annotations

from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

from greencode.policies import POLICY_FORMS

MAX_STOP_SEQUENCES = 8
MAX_STOP_CHARS = 256
MAX_POLICY_CHARS = 64
MIN_TEMPERATURE = 1e-3


class GreencodeParameters(BaseModel):
    """`parameters.greencode`: this request's exit policy, overriding the server's default."""

    model_config = ConfigDict(strict=True, extra="forbid")

    policy: Optional[str] = Field(None, min_length=1, max_length=MAX_POLICY_CHARS,
                                  description=POLICY_FORMS)
    threshold: Optional[float] = Field(None, allow_inf_nan=False,  # its range is the policy's (greencode.policies)
                                       description="the policy's threshold (T, P or H) for this request")


class GenerateParameters(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    max_new_tokens: Optional[int] = Field(None, ge=1, description="capped at the server's [serve].max_new_tokens_cap")
    temperature: Optional[float] = Field(None, ge=0.0, allow_inf_nan=False, description="0 = greedy")
    top_p: Optional[float] = Field(None, gt=0.0, le=1.0, allow_inf_nan=False)
    do_sample: Optional[bool] = Field(None, description="false forces greedy decoding")
    seed: Optional[int] = Field(None, ge=0, le=2**63 - 1)
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
        return self

    @property
    def ignored(self) -> list[str]:
        return sorted(self.model_extra or {})


class GenerateRequest(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    inputs: str = Field(..., min_length=1, description="the code before the cursor")
    parameters: GenerateParameters = Field(default_factory=GenerateParameters)
    stream: Optional[bool] = Field(None, description="HF Inference API routes only: answer with SSE")

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


def describe_errors(errors: list[dict]) -> str:
    """One line naming each bad field: 'parameters.max_new_tokens: Input should be a valid integer'."""
    parts = []
    for error in errors:
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        message = error.get("msg", "invalid value")
        if error.get("type") == "json_invalid":
            message = f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'parse error')})"
            location = []
        elif not location:
            message = 'the body must be a JSON object {"inputs": "...", "parameters": {...}}'
            if isinstance(error.get("input"), (bytes, str)):
                message += " sent with Content-Type: application/json"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        parts.append(f"{'.'.join(location)}: {message}" if location else message)
    return "; ".join(dict.fromkeys(parts)) or "invalid request"
