"""TCAV against Captum's (captum.concept, 0.9): with the same CAVs given to both, the same TCAV scores on
the trained demo net, to 1e-6, and so the same significance decisions. Captum trains its CAVs with
sklearn's SGD; the CAVs here come from nnvis (cav.train_cav) and reach Captum through its Classifier
interface, so what is compared is everything after the CAV: the layer gradients, their product with
the CAV and the share of positive ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from nnvis_core.demo import load_demo_model
from nnvis_core.demo.model import normalize
from nnvis_core.demo.shapes import generate_dataset
from nnvis_plugins.concepts import cav

captum_concept = pytest.importorskip("captum.concept")
LAYERS = ("features.11", "features.16")
RANDOM_SETS = 4


class GivenCAVs(captum_concept.Classifier):
    """Captum's classifier interface answering with nnvis's CAVs: the pair of concept ids in the labels of
    the activations Captum hands over picks the CAV; its row for the concept is the CAV, for the other -CAV."""

    def __init__(self, cavs: dict[tuple[int, int, str], torch.Tensor], layer_of: list[str]):
        self.cavs, self.layer_of, self.pair = cavs, layer_of, None

    def train_and_eval(self, dataloader, **kwargs):
        labels = torch.cat([batch[1] for batch in dataloader])
        self.pair = tuple(sorted(int(label) for label in labels.unique()))
        return {"accs": torch.tensor(1.0)}

    def weights(self):
        concept, other = self.pair
        vector = self.cavs[(concept, other, self.layer_of[0])]
        return torch.stack([vector, -vector]).float()  # rows in classes() order: the concept first

    def classes(self):
        return list(self.pair)


@pytest.fixture(scope="module")
def sets():
    """A concept (the demo's class-0 shape, 12 images), RANDOM_SETS random sets (12 images of mixed
    classes each) and the explained class's images (16 images of class 3)."""
    images, _, labels = generate_dataset(160, seed=17)
    x = normalize(images)
    concept = x[labels == 0][:12]
    mixed = x[labels != 0]
    randoms = [mixed[12 * i:12 * (i + 1)] for i in range(RANDOM_SETS)]
    explained = x[labels == 3][:16]
    return concept, randoms, explained


def test_tcav_scores_equal_captums_with_the_same_cavs(sets, tmp_path):
    model = load_demo_model()
    concept, randoms, explained = sets
    concept_id, random_ids = 0, list(range(1, RANDOM_SETS + 1))
    vectors, ours = {}, {}
    for layer in LAYERS:
        acts = cav.activations(model, concept, layer)
        gradients = cav.layer_gradients(model, explained, layer, target=3)
        for random_id, random in zip(random_ids, randoms):
            vector = cav.train_cav(acts, cav.activations(model, random, layer)).vector
            vectors[(concept_id, random_id, layer)] = vector
            ours[(random_id, layer)] = cav.tcav_score(gradients, vector)
    concepts = [captum_concept.Concept(concept_id, "shape0", DataLoader(concept, batch_size=8))]
    concepts += [captum_concept.Concept(i, f"random{i}", DataLoader(r, batch_size=8))
                 for i, r in zip(random_ids, randoms)]
    for layer in LAYERS:  # one layer per TCAV object: the classifier answers for the layer it is told
        classifier = GivenCAVs(vectors, [layer])
        tcav = captum_concept.TCAV(model, [layer], classifier=classifier, save_path=str(tmp_path / layer))
        scores = tcav.interpret(explained, [[concepts[0], c] for c in concepts[1:]], target=3)
        for random_id in random_ids:
            theirs = scores[f"{concept_id}-{random_id}"][layer]["sign_count"]
            assert float(theirs[0]) == pytest.approx(ours[(random_id, layer)], abs=1e-6)
            assert float(theirs[1]) == pytest.approx(1 - ours[(random_id, layer)], abs=1e-6)
    assert len(set(ours.values())) > 1  # the scores tell the random sets apart: the comparison can fail


def test_significance_follows_the_t_test_with_bonferroni():
    concept = np.array([0.9, 0.85, 0.95, 0.9])
    random = np.array([0.5, 0.4, 0.6, 0.55])
    from scipy import stats

    p = stats.ttest_ind(concept, random).pvalue
    result = cav.significance(concept, random, tests=3)
    assert result.p_value == pytest.approx(p) and result.threshold == pytest.approx(0.05 / 3)
    assert result.significant == (p < 0.05 / 3)
    assert not cav.significance(random, random + 0.01, tests=1).significant
    assert cav.significance(np.full(3, 0.5), np.full(3, 0.5)).p_value == 1.0
    with pytest.raises(ValueError, match="two random sets"):
        cav.significance(concept[:1], random)
