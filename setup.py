# Copyright (c) mmseg-resensemble contributors. All rights reserved.
import os.path as osp
from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))


def get_version():
    namespace = {}
    with open(osp.join(HERE, 'mmseg_resensemble', 'version.py')) as f:
        exec(compile(f.read(), 'version.py', 'exec'), namespace)
    return namespace['__version__']


def parse_requirements(fname):
    """Read the non-comment lines of a requirements file."""
    with open(osp.join(HERE, fname)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


if __name__ == '__main__':
    with open(osp.join(HERE, 'README.md'), encoding='utf-8') as f:
        long_description = f.read()
    setup(
        name='mmseg-resensemble',
        version=get_version(),
        description='ResEnsemble-DDPM for MMSegmentation 1.x: a residual '
        'denoising diffusion learner ensembled with a frozen '
        'end-to-end segmentation model',
        long_description=long_description,
        long_description_content_type='text/markdown',
        license='Apache License 2.0',
        packages=find_packages(exclude=('configs', 'tools', 'tests')),
        python_requires='>=3.8',
        install_requires=[
            'torch>=2.1',
            'mmcv>=2.0.0rc4,<2.2.0',
        ] + parse_requirements('requirements/runtime.txt'),
        extras_require=dict(
            tests=parse_requirements('requirements/tests.txt'),
            # MMSeg's Mask2Former/MaskFormer E2E learners need mmdet
            mask2former=parse_requirements('requirements/mask2former.txt'),
            # MMSeg's ConvNeXt/PoolFormer E2E learners need mmpretrain
            # (and a torchvision matching torch)
            mmpretrain=parse_requirements('requirements/mmpretrain.txt')),
        classifiers=[
            'Programming Language :: Python :: 3',
            'Topic :: Scientific/Engineering :: Artificial Intelligence',
        ],
        zip_safe=False)
