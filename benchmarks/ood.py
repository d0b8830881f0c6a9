"""What does the app answer for real photos that are not food? Each should get "not food" or "not sure", never a dish with confidence.

The photos ship inside installed packages (scikit-image, scikit-learn, matplotlib): a cat, an astronaut, a rocket, a
cameraman, the Hubble deep field, a microscope slide, a Chinese temple, a flower and Grace Hopper. Each goes through the
app's own path (`Predictor` on the bundle, the app's `verdict` at the bundle's threshold).

Usage: python benchmarks/ood.py BUNDLE [BUNDLE ...]   (a run's bundle folder, e.g. demo-runs/<time>/runs/<run>/bundle)
Prints a Markdown table per bundle and the rate of photos called a dish.
"""
import sys
from pathlib import Path


def real_non_food()->dict:
    "{name: PIL image} of the real non-food photos installed packages ship."
    import matplotlib, sklearn
    from PIL import Image
    from skimage import data
    photos = {n: Image.fromarray(getattr(data, n)()) for n in ('chelsea', 'astronaut', 'rocket', 'camera', 'hubble_deep_field', 'immunohistochemistry')}
    photos['china'] = Image.open(Path(sklearn.__file__).parent/'datasets'/'images'/'china.jpg')
    photos['flower'] = Image.open(Path(sklearn.__file__).parent/'datasets'/'images'/'flower.jpg')
    photos['grace_hopper'] = Image.open(Path(matplotlib.get_data_path())/'sample_data'/'grace_hopper.jpg')
    return {n: im.convert('RGB') for n, im in photos.items()}


def answers(bundle)->list:
    "(photo, app's answer, top label, its probability) for each real non-food photo."
    from foodvision.app import NOT_FOOD_TEXT, NOT_SURE_TEXT, verdict
    from foodvision.infer import load_predictor
    pred = load_predictor(bundle)
    rows = []
    for name, im in real_non_food().items():
        r = pred.predict([im], top_k=3)[0]
        rows.append((name, verdict(r, pred.threshold), r['label'], float(r['prob'])))
    return rows


if __name__ == '__main__':
    from foodvision.app import NOT_FOOD_TEXT, NOT_SURE_TEXT
    for b in sys.argv[1:]:
        rows = answers(b)
        dish = [r for r in rows if r[1] not in (NOT_FOOD_TEXT, NOT_SURE_TEXT)]
        print(f"\n{b}\n\n| photo | app answers | top class | probability |\n|---|---|---|---:|")
        for n, v, l, p in rows: print(f"| {n} | {v} | {l} | {p:.2f} |")
        print(f"\ncalled a dish: {len(dish)} of {len(rows)}")
