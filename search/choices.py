"""The names DATASET, SAMPLER and PRUNER choose among, without importing what they name: the
settings check a value against them before anything heavy loads, and the datasets
(``search/datasets``) and the study (``search/trials/study.py``) key their own tables by them
(``tests/test_settings.py`` holds the tables to these names). SPACE's names are the spaces'
catalog's (``spaces/catalog.py``).
"""

#: Each dataset and the square size its images have when IMAGE_SIZE is not given.
NATIVE_SIZE = {"tinyimagenet": 64, "cifar10": 32, "cifar100": 32, "mnist": 28, "fashion_mnist": 28, "digits": 8,
               "folder": 64}
DATASETS = tuple(NATIVE_SIZE)
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("hyperband", "median", "sha", "none")
