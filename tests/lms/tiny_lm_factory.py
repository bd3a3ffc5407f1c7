"""Tiny random causal LM + locally trained tokenizer for lms tests (no hub access)."""

from __future__ import annotations

OPTIONS = [
    "Software Developers",
    "Cashiers",
    "Retail Salespersons",
    "Registered Nurses",
    "Chief Executives",
    "Chief Sustainability Officers",
    "Electricians",
    "Actors",
    "Actuaries",
    "Janitors and Cleaners, Except Maids and Housekeeping Cleaners",
]

_CORPUS = [
    "Your input fields are: Your output fields are: All interactions will be structured in the following way, "
    "with the appropriate values filled in. Respond with the corresponding output fields, starting with the field "
    "then ending with the marker for completed. In adhering to this structure, your objective is: "
    "[[ ## history ## ]] [[ ## reason ## ]] [[ ## occupation ## ]] [[ ## score ## ]] [[ ## completed ## ]]",
    "must be formatted as a valid Python int. the value you produce must be a single int value note",
    "Age 22 worked as a cashier then retail salesperson. Given a career history predict the next occupation.",
    "0 1 2 3 4 5 6 7 8 9 10 42 100 - . , : ; ( ) { } [ ] ` ' \" True False yes no",
    "the a an of and to in is was for on with as by at from this that it be are",
] + OPTIONS


def build_tiny_model(path, seed: int = 0) -> str:
    """Train a byte-level BPE tokenizer on a small corpus and save it with a random 2-layer Llama."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(_CORPUS * 3, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
    fast.chat_template = (
        "{{ bos_token }}{% for m in messages %}{{ '<|' + m['role'] + '|>\n' + m['content'] + '\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    )
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=4096,
                         pad_token_id=fast.pad_token_id, bos_token_id=fast.bos_token_id,
                         eos_token_id=fast.eos_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return str(path)
