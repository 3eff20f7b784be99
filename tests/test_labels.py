import pytest
from tests.conftest import shared_path

from robustlens.errors import UserError
from robustlens.models.labels import class_name, imagenet_classes, resolve_class


def test_thousand_classes_in_index_order():
    classes = imagenet_classes()
    assert len(classes) == 1000
    assert [c.index for c in classes] == list(range(1000))
    assert classes[0].wnid == "n01440764" and classes[0].name == "tench"
    assert class_name(263) == "Pembroke" and class_name(282) == "tiger cat" and class_name(76) == "tarantula"


def test_matches_shared_synset_list():
    lines = shared_path("data", "ilsvrc_val", "synset_words.txt").read_text().splitlines()
    for c, line in zip(imagenet_classes(), lines, strict=True):
        wnid, _, rest = line.partition(" ")
        assert c.wnid == wnid and c.names[0] == rest.split(",")[0].strip()


@pytest.mark.parametrize("query,index", [
    ("tiger cat", 282), ("Tiger Cat", 282), ("  tiger   cat ", 282), ("tarantula", 76), ("282", 282), (76, 76),
    ("n02123159", 282), ("Pembroke Welsh corgi", 263), ("corgi", None), ("tiger", 292), ("goldfish", 1),
])
def test_resolve(query, index):
    if index is None:  # "corgi" is a substring of Pembroke's and Cardigan's names: ambiguous
        with pytest.raises(UserError, match="ambiguous.*263.*264|ambiguous.*264.*263"):
            resolve_class(query)
    else:
        assert resolve_class(query) == index


def test_exact_synonym_shared_by_two_classes_lists_both():
    with pytest.raises(UserError, match=r"ambiguous: 134 \(crane\), 517 \(crane\)"):
        resolve_class("crane")


@pytest.mark.parametrize("query,msg", [("1000", "out of range"), ("-1", "out of range"), ("n99999999", "unknown wnid"),
                                       ("zzzqqq", "unknown class"), ("", "empty"), ("tarantul a", "unknown class")])
def test_resolve_errors(query, msg):
    with pytest.raises(UserError, match=msg):
        resolve_class(query)


def test_small_label_space_takes_indices_only():
    assert resolve_class("7", num_classes=10) == 7
    with pytest.raises(UserError, match="index 0..9"):
        resolve_class("tabby", num_classes=10)
