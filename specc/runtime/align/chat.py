"""Chat templates and the split of a conversation into prompt and response token spans.

A template is Jinja2 over `messages` (each `{role, content}`) and `add_generation_prompt`,
as in Hugging Face chat templates. `chatml` and `llama3` are `templates/chat/<name>.jinja`;
any other value is a path to a template file. Response spans come from rendering
prefixes, HF's own method: for the i-th assistant message, the prompt is the rendering of
messages[:i] with the generation prompt and the response is what rendering messages[:i+1]
adds after it (so it includes the end-of-turn marker: the model learns to stop). A template
for which that is not a prefix is rejected with the offending message.

Each span is tokenized on its own and the ids concatenated, so training sees exactly the
token boundaries that generation from `prompt_ids` will see.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATES_ENV = "SPECC_TEMPLATES"
BUILTIN = ("chatml", "llama3")
END_OF_TURN = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>"}


def templates_root() -> Path:
    """`$SPECC_TEMPLATES`, else `templates/` beside the package (as the bundle emitter finds it)."""
    override = os.environ.get(TEMPLATES_ENV)
    return Path(override) if override else Path(__file__).resolve().parents[3] / "templates"


@dataclass(frozen=True)
class ChatTemplate:
    source: str
    end_of_turn: str
    """Text that closes an assistant turn (generation stops there)."""
    special_tokens: tuple[tuple[str, str], ...] = ()
    """(`bos_token`, text) pairs a Hugging Face template reads (from its tokenizer_config.json)."""

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        environment = ImmutableSandboxedEnvironment(undefined=StrictUndefined, keep_trailing_newline=True)
        return environment.from_string(self.source).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                            raise_exception=_raise, **dict(self.special_tokens))

    def spans(self, messages: list[dict]) -> list[tuple[str, bool]]:
        """(text, is_response) pieces whose concatenation is the rendered conversation."""
        pieces: list[tuple[str, bool]] = []
        done = ""
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self.render(messages[:index], add_generation_prompt=True)
            full = self.render(messages[:index + 1], add_generation_prompt=False)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise ValueError(f"chat template is not prefix-stable at message {index}: rendering the "
                                 "conversation so far does not extend the previous rendering")
            pieces += [(prompt[len(done):], False), (full[len(prompt):], True)]
            done = full
        return pieces

    def prompt(self, messages: list[dict]) -> str:
        """What the model is given before it writes the next assistant message."""
        return self.render(messages, add_generation_prompt=True)


def _raise(message: str):
    """`raise_exception(...)`, which Hugging Face chat templates call on conversations they refuse."""
    raise ValueError(f"chat template: {message}")


def load_template(name: str) -> ChatTemplate:
    """`chatml`, `llama3`, a Jinja file, or a Hugging Face `tokenizer_config.json` (its `chat_template`,
    with the special tokens it names: what `model.init_from` directories bring)."""
    if name in BUILTIN:
        path = templates_root() / "chat" / f"{name}.jinja"
        return ChatTemplate(path.read_text(), END_OF_TURN[name])
    path = Path(name)
    if not path.is_file():
        raise ValueError(f"chat_template {name!r} is neither {' nor '.join(BUILTIN)} nor a template file")
    special: tuple[tuple[str, str], ...] = ()
    if path.name == "tokenizer_config.json":
        import json

        from specc.spec.hf_config import chat_template, token_text

        config = json.loads(path.read_text())
        source = chat_template(config)
        if source is None:
            raise ValueError(f"{path} has no chat_template")
        special = tuple((key, token_text(config.get(key)) or "") for key in ("bos_token", "eos_token"))
    else:
        source = path.read_text()
    end = next((marker for marker in END_OF_TURN.values() if marker in source), "")
    return ChatTemplate(source, end, special)
