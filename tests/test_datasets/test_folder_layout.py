# Copyright (c) mmseg-resensemble contributors. All rights reserved.
"""inspect_folder: a data set in MMSeg's folder layout, from the folder."""
import pytest
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS

from mmseg_resensemble.datasets import generate_shapes_dataset
from mmseg_resensemble.datasets.folder_layout import (folder_dataset,
                                                      inspect_folder,
                                                      write_split_file)


@pytest.fixture
def root(tmp_path):
    generate_shapes_dataset(str(tmp_path), dict(train=3, test=2), seed=0)
    # a comment and a blank line are not classes
    (tmp_path / 'classes.txt').write_text('a\nb\nc\nd\n\ne\n# 255 = void\n')
    return tmp_path


def test_inspect_folder_finds_classes_splits_and_suffixes(root):
    layout = inspect_folder(str(root))
    assert layout.classes == ['a', 'b', 'c', 'd', 'e']
    assert sorted(layout.splits) == ['test', 'train']
    assert layout.splits['train'] == ['00000', '00001', '00002']
    assert (layout.img_suffix, layout.seg_map_suffix) == ('.png', '.png')
    assert layout.image_size == (96, 128)


def test_folder_dataset_builds_and_takes_a_subset(root, tmp_path):
    init_default_scope('mmseg')
    layout = inspect_folder(str(root))
    dataset = DATASETS.build(folder_dataset(layout, 'train', []))
    assert len(dataset) == 3
    assert dataset.metainfo['classes'] == ('a', 'b', 'c', 'd', 'e')
    subset = write_split_file(str(tmp_path / 'fold.txt'), ['00001'])
    dataset = DATASETS.build(folder_dataset(layout, 'train', [], subset))
    assert len(dataset) == 1
    assert dataset[0]['img_path'].endswith('train/00001.png')
    with pytest.raises(ValueError, match="split 'val' is not in"):
        folder_dataset(layout, 'val', [])


def test_inspect_folder_names_what_is_missing(root):
    (root / 'classes.txt').unlink()
    with pytest.raises(FileNotFoundError, match='classes.txt'):
        inspect_folder(str(root))
    (root / 'classes.txt').write_text('only\n')
    with pytest.raises(ValueError, match='1 class'):
        inspect_folder(str(root))
    (root / 'classes.txt').write_text('a\nb\n')
    (root / 'ann_dir' / 'test' / '00001.png').unlink()
    with pytest.raises(ValueError, match='have no label.*00001.png'):
        inspect_folder(str(root))
    for f in (root / 'img_dir' / 'test').iterdir():
        f.unlink()
    with pytest.raises(ValueError, match='holds no .png images'):
        inspect_folder(str(root))
    (root / 'img_dir' / 'test').rmdir()
    with pytest.raises(FileNotFoundError, match='img_dir/test does not'):
        inspect_folder(str(root))
