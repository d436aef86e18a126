"""Chat requests become prompt token ids through a chat template, as in Hugging Face tokenizers.

The template (`CHAT_TEMPLATE`, Jinja in the `chat_template` format of tokenizer_config.json) is
ChatML-shaped: each message is `<|role|>` on a line, its content, then the tokenizer's
end-of-document token; the prompt ends with `<|assistant|>` and a newline, so the model writes the
assistant's turn and ends it with that same token, which stops the completion. The role markers are
plain text; bos/eos are the special tokens `pm data prepare` puts in every tokenizer (`<|bos|>`,
`<|eos|>`), left out with a tokenizer that has none. It is rendered by transformers itself
(`apply_chat_template`), and `pm model export` writes it into tokenizer_config.json, so Hugging Face
users of an exported model get the very same prompt ids.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from offchain.errors import UserError
from offchain.model.tokens import BOS_TOKEN, EOS_TOKEN

CHAT_TEMPLATE = (
    "{{ bos_token or '' }}"
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token or '' }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

Role = Literal["system", "user", "assistant"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Role
    content: str


class ChatTemplate:
    """Messages -> prompt ids with CHAT_TEMPLATE and the model's tokenizer."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        special = {
            name: token
            for name, token in (("bos_token", BOS_TOKEN), ("eos_token", EOS_TOKEN))
            if tokenizer.token_to_id(token) is not None
        }
        self.hf = PreTrainedTokenizerFast(tokenizer_object=tokenizer, chat_template=CHAT_TEMPLATE, **special)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """The ids of the prompt that asks for the assistant's next turn; a UserError when the
        conversation has no user turn to answer."""
        if not any(message.role == "user" for message in messages):
            raise UserError("messages must contain at least one message with role 'user'")
        conversation = [message.model_dump() for message in messages]
        return list(self.hf.apply_chat_template(conversation, add_generation_prompt=True)["input_ids"])
