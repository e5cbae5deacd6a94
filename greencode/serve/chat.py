"""Chat conversations for `/v1/chat/completions` (OpenAI) and `/api/chat` (Ollama).

A conversation is checked here (a list of {role, content} with known roles and text), rendered by the
model's own chat template into the prompt's token ids, and then runs as any completion does: the shared
GenerateRequest carries its parameters through the one validation, and the job skips only the FIM plan
(greencode.serve.jobs). A conversation is never cut to fit the window: too long is a 413. An answer is a
turn, not a line of code: without a limit in the request it runs to the end of the turn (the model's EOS) or
[serve].max_new_tokens_cap, not [engine].max_new_tokens.
"""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from greencode.serve.schema import GreencodeParameters, OllamaOptions, OpenAIRequest

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # developer: OpenAI's


class ChatMessage(BaseModel):
    """One message: `content` is text, or OpenAI's list of parts of which only {"type": "text"} are taken.
    Other fields (name, images, tool_calls) are ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    role: str
    content: str

    @field_validator("role")
    @classmethod
    def _known_role(cls, role: str) -> str:
        if role not in ROLES:
            raise ValueError(f"{role[:40]!r} is not a role this server takes ({', '.join(ROLES)})")
        return role

    @field_validator("content", mode="before")
    @classmethod
    def _text(cls, content):
        if isinstance(content, list):
            if any(not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str)
                   for part in content):
                raise ValueError('only text parts are taken ({"type": "text", "text": "..."}): this model reads '
                                 "no images or files")
            content = "".join(part["text"] for part in content)
        if not isinstance(content, str):
            raise ValueError("must be text, or a list of text parts")
        if not content.strip():
            raise ValueError("is empty: every message needs some text")
        return content


Messages = list[ChatMessage]


class ChatCompletionRequest(OpenAIRequest):
    """OpenAI `POST /v1/chat/completions`. Unknown fields (tools, response_format, ...) are reported ignored."""

    messages: Messages = Field(..., min_length=1)
    max_completion_tokens: Optional[int] = None  # the newer name of max_tokens
    logprobs: Optional[bool] = None

    @model_validator(mode="after")
    def _supported(self) -> "ChatCompletionRequest":
        if self.logprobs:
            raise ValueError("logprobs: not supported; leave it out or send false")
        return self

    def to_generate(self, prompt: str, max_new_tokens_cap: int) -> dict:
        """The shared GenerateRequest's body for the rendered conversation `prompt`."""
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        return {"inputs": prompt, "parameters": self.parameters(max_new_tokens_cap if limit is None else limit)}


class OllamaChatRequest(BaseModel):
    """Ollama `POST /api/chat` (NDJSON stream by default). Unknown fields (tools, format, keep_alive, think, ...)
    are reported ignored."""

    model_config = ConfigDict(strict=True, extra="allow")

    model: Optional[str] = None
    messages: Messages = Field(..., min_length=1)
    stream: bool = True
    options: OllamaOptions = Field(default_factory=OllamaOptions)
    greencode: Optional[GreencodeParameters] = None

    def to_generate(self, prompt: str, max_new_tokens_cap: int) -> dict:
        """The shared GenerateRequest's body, read as /api/generate reads its options."""
        from greencode.serve.schema import OllamaGenerateRequest

        options = self.options
        if options.num_predict is None:
            options = options.model_copy(update={"num_predict": -1})  # Ollama's default: to the end of the turn
        body = {**(self.model_extra or {}), "options": options, "greencode": self.greencode, "prompt": prompt}
        return OllamaGenerateRequest.model_construct(**body).to_generate(max_new_tokens_cap)


def render_conversation(state, messages: Messages) -> tuple[str, list[int]]:
    """The conversation as the model's chat template writes it (ending where the assistant's turn begins):
    (text, token ids). ServeError for a model without a template or a conversation its template refuses."""
    from jinja2 import TemplateError

    from greencode.serve.jobs import ServeError

    tokenizer = state.engine.loaded.tokenizer
    if not getattr(tokenizer, "chat_template", None):
        raise ServeError(400, f"the model '{state.model_id}' ({state.model_description}) has no chat template, so "
                         "it serves completions only: use /v1/completions, /api/generate or /generate",
                         "chat_unsupported")
    turns = [{"role": ROLES[message.role], "content": message.content} for message in messages]
    try:
        text = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    except (TemplateError, ValueError, TypeError) as exc:  # e.g. a template that wants roles to alternate
        raise ServeError(422, f"messages: the model's chat template refuses this conversation ({exc})",
                         "validation") from None
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]
