"""Fill-in-the-middle: recognise the FIM prompt forms editors send, and complete them with any model.

Editors build `prefix marker + text before the cursor + suffix marker + text after + middle marker`
(llm-ls: `{fim.prefix}{before}{fim.suffix}{after}{fim.middle}`), in one of these forms:

    starcoder   <fim_prefix>…<fim_suffix>…<fim_middle>          (StarCoder, StarCoder2)
    santacoder  <fim-prefix>…<fim-suffix>…<fim-middle>          (SantaCoder)
    codellama   <PRE> …  <SUF>…  <MID>                          (llm-vscode's CodeLlama template)
    deepseek    <｜fim▁begin｜>…<｜fim▁hole｜>…<｜fim▁end｜>      (DeepSeek-Coder)
    qwen        <|fim_prefix|>…<|fim_suffix|>…<|fim_middle|>    (Qwen2.5-Coder)

OpenAI and Ollama clients may instead send the text after the cursor in a `suffix` field.

A model whose tokenizer has one form's three tokens gets its own FIM prompt (`fim_prompt_ids`). A model
without them (the shipped default) completes the prefix alone, and the suffix only stops it
(`SuffixStop`): the completion is cut where it starts to repeat the suffix's first non-blank line, or
at a line that closes the block the cursor is in.
"""

from __future__ import annotations

from dataclasses import dataclass

from greencode.errors import GreencodeError


@dataclass(frozen=True)
class FimForm:
    name: str
    prefix: str  # the markers as they appear in a prompt
    suffix: str
    middle: str
    padded: bool = False  # llm-vscode writes "<PRE> " + before + " <SUF>" + after + " <MID>"

    @property
    def markers(self) -> tuple[str, str, str]:
        return self.prefix, self.suffix, self.middle


FORMS = (
    FimForm("starcoder", "<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
    FimForm("santacoder", "<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    FimForm("codellama", "<PRE>", "<SUF>", "<MID>", padded=True),
    FimForm("deepseek", "<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),
    FimForm("qwen", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
)
FORM_NAMES = tuple(form.name for form in FORMS)


@dataclass(frozen=True)
class FimParts:
    prefix: str  # the text before the cursor (the whole prompt when it is not FIM)
    suffix: str  # the text after the cursor ("" when none was given)
    source: str  # a form name, "suffix" (the request's suffix field) or "" (a plain prompt)


def _build(form: FimForm, prefix: str, suffix: str) -> str:
    """A prompt in `form`, exactly as llm-ls builds it from llm-vscode's templates."""
    if form.padded:
        return f"{form.prefix} {prefix} {form.suffix}{suffix} {form.middle}"
    return f"{form.prefix}{prefix}{form.suffix}{suffix}{form.middle}"


def build_prompt(form_name: str, prefix: str, suffix: str) -> str:
    return _build(next(form for form in FORMS if form.name == form_name), prefix, suffix)


def split_fim(prompt: str, suffix: str | None = None) -> FimParts:
    """The prefix and suffix of a FIM prompt in any known form (or of a prompt plus a suffix field).

    Raises GreencodeError for markers in the wrong order, missing or repeated, for two forms in one
    prompt, and for a FIM prompt that also has a suffix field (which suffix would be meant?)."""
    found = [form for form in FORMS if any(marker in prompt for marker in form.markers)]
    if not found:
        return FimParts(prompt, suffix or "", "suffix" if suffix else "")
    if len(found) > 1:
        raise GreencodeError(f"the prompt mixes FIM forms {' and '.join(f.name for f in found)}: use one")
    form = found[0]
    expected = " … ".join(form.markers)
    for marker in form.markers:
        count = prompt.count(marker)
        if count != 1:
            raise GreencodeError(f"the prompt has {count} {marker} markers; a {form.name} FIM prompt has one each, "
                                 f"in the order {expected}")
    at = [prompt.index(marker) for marker in form.markers]
    if not at[0] < at[1] < at[2]:
        raise GreencodeError(f"FIM markers in the wrong order: a {form.name} prompt is {expected} "
                             "(text before the cursor, then the text after it)")
    if prompt[at[2] + len(form.middle):].strip():
        raise GreencodeError(f"text after {form.middle}: the completion starts there, so nothing may follow it")
    if suffix:
        raise GreencodeError(f"the prompt is a {form.name} FIM prompt and the request also has a suffix field: "
                             "send the text after the cursor one way only")
    before = prompt[:at[0]] + prompt[at[0] + len(form.prefix):at[1]]
    after = prompt[at[1] + len(form.suffix):at[2]]
    if form.padded:
        before = before[1:] if prompt[at[0] + len(form.prefix):].startswith(" ") else before
        before = before[:-1] if before.endswith(" ") else before
        after = after[:-1] if after.endswith(" ") else after
    return FimParts(before, after, form.name)


# -- models with FIM tokens --------------------------------------------------------------------------

def _token_id(vocab: dict, marker: str, padded: bool) -> int | None:
    for candidate in ((marker, "▁" + marker) if padded else (marker,)):
        if candidate in vocab:
            return vocab[candidate]
    return None


def model_fim_form(tokenizer) -> FimForm | None:
    """The FIM form whose three markers are each one token of this tokenizer, if any."""
    vocab = tokenizer.get_vocab()
    for form in FORMS:
        if all(_token_id(vocab, marker, form.padded) is not None for marker in form.markers):
            return form
    return None


def describe_fim(tokenizer) -> str:
    form = model_fim_form(tokenizer)
    if form is None:
        return "prefix only: the model has no FIM tokens, so the suffix only stops the completion"
    return f"{form.name}: the model's own FIM prompt {' … '.join(form.markers)}"


def fim_prompt_ids(tokenizer, form: FimForm, prefix: str, suffix: str, limit: int) -> list[int]:
    """Token ids of the model's FIM prompt in at most `limit` tokens: the prefix keeps the tokens nearest
    the cursor, the suffix (at most a quarter of the room) those nearest it too."""
    vocab = tokenizer.get_vocab()
    marks = [_token_id(vocab, marker, form.padded) for marker in form.markers]
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"] if text else []  # noqa: E731
    before, after = encode(prefix), encode(suffix)
    room = max(1, limit - len(marks))
    after = after[:min(len(after), room // 4)]
    before = before[-(room - len(after)):] if room > len(after) else []
    return [marks[0], *before, marks[1], *after, marks[2]]


def fim_stop_strings(form: FimForm | None) -> list[str]:
    """A model's FIM markers end its middle: it would start another FIM turn after them."""
    return list(form.markers) if form is not None else []


# -- stopping on the suffix --------------------------------------------------------------------------

def _indent(line: str) -> int:
    return len(line.expandtabs(4)) - len(line.expandtabs(4).lstrip())


class SuffixStop:
    """Where a completion of `prefix` should end, given the `suffix` after the cursor.

    cut(text, finished) -> the length to keep, or None to go on: before the line that starts to repeat the
    suffix's first non-blank line, before a line that closes the block the cursor is in, or (when the
    suffix goes on on the cursor's line) before the end of the first line where it repeats that text.
    visible(text) -> how much of the text so far can be shown: never more than a later cut keeps."""

    def __init__(self, prefix: str, suffix: str):
        lines = suffix.split("\n")
        self.same_line = lines[0].strip()  # what follows the cursor on its line
        self.anchor = next((line.strip() for line in lines if line.strip()), "")
        self.suffix_starts_new_line = not lines[0].strip() and len(lines) > 1
        cursor_line = prefix.rsplit("\n", 1)[-1]
        self.block_indent = _indent(cursor_line) if cursor_line.strip() else len(cursor_line.expandtabs(4))
        self.active = bool(self.anchor)

    def _line_cut(self, text: str, start: int) -> int:
        """Keep text up to a line start; drop the newline before it when the suffix brings its own."""
        kept = text[:start]
        stripped = kept.rstrip(" \t")
        if self.suffix_starts_new_line and stripped.endswith("\n"):
            stripped = stripped[:-1]
        return len(stripped)

    def cut(self, text: str, finished: bool = False) -> int | None:
        if not self.active:
            return None
        first_end = text.find("\n")
        if self.same_line and (first_end >= 0 or finished):
            first = text[:first_end if first_end >= 0 else len(text)].rstrip()
            if first.endswith(self.same_line):
                return len(first[:len(first) - len(self.same_line)].rstrip(" \t"))
        position = first_end
        while position >= 0:
            start = position + 1
            end = text.find("\n", start)
            line = text[start:end if end >= 0 else len(text)]
            complete = end >= 0 or finished
            body = line.strip()
            if body and (body.startswith(self.anchor) or (complete and self.anchor.startswith(body))):
                return self._line_cut(text, start)
            if body and _indent(line) < self.block_indent:
                return self._line_cut(text, start)
            position = end
        return None

    def visible(self, text: str) -> int:
        """The safe length to stream now: holds back a line that may still turn out to repeat the suffix,
        and trailing blanks (a cut may drop them)."""
        if not self.active:
            return len(text)
        cut = self.cut(text)
        if cut is not None:
            return cut
        last = text.rfind("\n")
        if last < 0:
            return 0 if self.same_line else len(text.rstrip())
        body = text[last + 1:].strip()
        if not body or self.anchor.startswith(body):
            return len(text[:last + 1].rstrip())
        return len(text)


def stream_safe_length(text: str, stop: list[str], rule: SuffixStop | None) -> int:
    """How much of a completion's text so far can be streamed without showing what a stop sequence or
    the suffix rule will cut: up to a stop sequence, short of a tail that may become one."""
    safe = rule.visible(text) if rule is not None else len(text)
    for sequence in stop:
        found = text.find(sequence)
        if found >= 0:
            safe = min(safe, found)
            continue
        for size in range(min(len(sequence) - 1, len(text)), 0, -1):
            if text.endswith(sequence[:size]):
                safe = min(safe, len(text) - size)
                break
    return safe


# -- one plan per request ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FimPlan:
    prompt: str | list[int]  # what the engine completes: text, or the model's FIM prompt as token ids
    mode: str  # "" (a plain prompt), "model" (the model's own FIM prompt) or "prefix-only"
    source: str  # the form the request used, or "suffix" (the suffix field)
    stop_rule: SuffixStop | None
    stop: list[str]  # extra stop sequences (the model's FIM markers)

    @property
    def note(self) -> str:
        if self.mode == "model":
            return f"fill-in-the-middle with the model's own FIM tokens (request: {self.source})"
        if self.mode == "prefix-only":
            return (f"the model has no FIM tokens: the prefix was completed and the suffix (request: {self.source}) "
                    "only stops the completion")
        return ""


def plan_completion(prompt: str, suffix: str | None, tokenizer, form: FimForm | None, limit: int) -> FimPlan:
    """How to complete a request's prompt (and suffix field) on this model; GreencodeError for a bad FIM prompt."""
    from greencode.decoding.window import cursor_window, text_window

    parts = split_fim(prompt, suffix)
    if not parts.source:
        return FimPlan(text_window(prompt), "", "", None, [])  # the window around the cursor, before tokenizing
    before, after = cursor_window(parts.prefix, parts.suffix)
    rule = SuffixStop(before, after)
    if form is not None:
        return FimPlan(fim_prompt_ids(tokenizer, form, before, after, limit), "model", parts.source,
                       rule, fim_stop_strings(form))
    return FimPlan(before or _file_start(tokenizer), "prefix-only", parts.source, rule, [])


def _file_start(tokenizer) -> list[int] | str:
    """What a model without FIM tokens completes when the cursor is at the top of a file (no prefix): the
    document-start token it was trained to follow, or else an empty line."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    return [start] if start is not None else "\n"
