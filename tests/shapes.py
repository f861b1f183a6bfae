"""The shapes of interest, listed once for every operation's tests.

Each linear shape is (rows, in_features, out_features). Interpreted kernels are
slow, so the big ones stay few.
"""

EXERCISE_LINEAR_SHAPES = [(64, 784, 512), (64, 512, 128), (64, 128, 10)]

ODD_LINEAR_SHAPES = [
    (1, 1, 1),
    (3, 1000, 3),
    (1000, 3, 3),
    (129, 257, 33),
    (17, 31, 19),  # no multiple of any block size
]

LINEAR_SHAPES = EXERCISE_LINEAR_SHAPES + ODD_LINEAR_SHAPES

# More than one group of GROUP_M = 8 row blocks at every BLOCK_M of the linear
# configs (9 blocks of 128 rows, 35 of 32), the last group partial, and several
# column blocks: the grouped program order must still cover every tile once.
GROUPED_ORDER_SHAPE = (1100, 5, 130)

# (rows, columns) for the row-wise operations (softmax, cross-entropy).
ROW_SHAPES = [(1, 1), (64, 10), (3, 1000), (1000, 3), (129, 257), (7, 4099)]
