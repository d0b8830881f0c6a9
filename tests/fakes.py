"""Test doubles shared by the cleaner and dashboard tests."""
import numpy as np
import pandas as pd

from foodvision.store import Store


def fake_predictions(store:Store, wrong_every:int=3, seed:int=0)->pd.DataFrame:
    "An evaluation table (the columns of foodvision.evaluate) without a model: every `wrong_every`-th item is mispredicted."
    items = store.items()
    classes = sorted(items.label.unique())
    rng = np.random.default_rng(seed)
    pred = [classes[(classes.index(l) + 1) % len(classes)] if k % wrong_every == 0 else l for k, l in enumerate(items.label)]
    prob = rng.uniform(0.4, 0.99, len(items))
    correct = np.array(pred) == items.label.values
    return pd.DataFrame(dict(item_id=items.id, file=items.file, path=items.path, split=items.split, label=items.label, pred=pred,
                             prob=prob, top_k='[]', loss=-np.log(np.where(correct, prob, (1 - prob) / 2)), correct=correct,
                             label_in_top_k=True))
