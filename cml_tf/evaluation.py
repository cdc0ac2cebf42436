"""The paper's evaluation protocol (section 4.2) applied to a model and a :class:`Split`."""

from typing import Iterable

from cml_tf.data.split import Split
from cml_tf.metrics import DEFAULT_KS, ranking_metrics


def evaluate(model, split: Split, part: str, ks: Iterable[int] = DEFAULT_KS, **kwargs) -> dict:
    """Recall/NDCG/Precision@K of ``model`` on ``split``'s 'valid' or 'test' part.

    ``model`` is anything with ``score(user_indices) -> [batch, n_items]`` (higher is better).
    Validation excludes training items from the ranking; test excludes training and validation
    items. Held-out items without an index count as misses; the result also reports how many
    there were (``unseen_items``) and how many held-out rows had an unknown user
    (``unknown_user_rows``, not scored).
    """
    heldout, unseen, exclude = split.heldout(part)
    if heldout is None:
        raise ValueError(f"the split has no {part} part")
    result = ranking_metrics(model.score, heldout.matrix, exclude=exclude, unseen=unseen, ks=ks,
                             **kwargs)
    result["unseen_items"] = int(unseen.sum())
    result["unknown_user_rows"] = int(split.unknown_users.get(part, 0))
    return result
