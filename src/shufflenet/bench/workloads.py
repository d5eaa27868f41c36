"""What `shufflenet benchmark` runs: the workloads, and the contenders timed on each."""
#: (model, image size, batch, mode): the workloads of the full run.
WORKLOADS = (
    ("shufflenet_v1_g3_x1_0", 224, 16, "train"),
    ("shufflenet_v1_g3_x2_0", 224, 16, "train"),
    ("shufflenet_v1_g3_x1_0", 32, 64, "train"),
    ("shufflenet_v1_g3_x1_0", 224, 16, "infer"),
    ("shufflenet_v1_g3_x2_0", 224, 16, "infer"),
    ("shufflenet_v1_g3_x1_0", 32, 64, "infer"),
    ("shufflenet_v1_g3_x1_0", 224, 1, "infer"),
    ("shufflenet_v2_x1_0", 224, 16, "train"),
    ("shufflenet_v2_x1_0", 224, 16, "infer"),
    ("shufflenet_v2_plus_medium", 224, 16, "train"),
    ("shufflenet_v2_plus_medium", 224, 16, "infer"),
    ("mobilenet_v1_100", 224, 16, "train"),
    ("mobilenet_v1_100", 224, 16, "infer"),
    ("mobilenet_v2_100", 224, 16, "train"),
    ("mobilenet_v2_100", 224, 16, "infer"),
    ("squeezenet1_1", 224, 16, "train"),
    ("squeezenet1_1", 224, 16, "infer"),
    ("xception", 299, 8, "train"),
    ("xception", 299, 8, "infer"),
)
#: The workload on which every variant tried runs too.
MAIN_WORKLOAD = ("shufflenet_v1_g3_x1_0", 224, 16)
#: Workloads of `--quick`: a few minutes in all.
QUICK_WORKLOADS = (
    ("shufflenet_v1_g3_x1_0", 32, 64, "train"),
    ("shufflenet_v1_g3_x1_0", 224, 16, "infer"),
)
#: The oneDNN instruction-set cap of this project's CPU fast path (`shufflenet.utils.cpu`).
FAST_ISA = "AVX2"
#: Label -> worker spec of each contender. MindSpore runs with the fast path unless a variant
#: says otherwise, and with this project's C++ kernels (`shufflenet.kernels`, as train.py on
#: CPU) only where the spec says `cpu_kernels`; PyTorch runs as its users run it. `ALWAYS` run
#: on every workload; the other variants (what was tried) run on 1.0x at 224 px, batch 16.
CONTENDERS = {
    "MindSpore graph": {"kind": "mindspore", "cpu_kernels": True},
    "MindSpore graph, MindSpore's kernels": {"kind": "mindspore"},
    "MindSpore MINDIR (GraphCell)": {"kind": "mindir", "only": "infer"},
    "MindSpore MINDIR, BN folded": {"kind": "mindir", "fold_bn": True, "only": "infer"},
    "ONNX Runtime (our ONNX export)": {"kind": "onnx", "only": "infer"},
    "ONNX Runtime, BN folded": {"kind": "onnx", "fold_bn": True, "only": "infer"},
    "MindSpore graph, no fast path": {"kind": "mindspore", "isa": "default", "threads": 0},
    "MindSpore graph, no fast path, split GroupConv": {
        "kind": "mindspore", "isa": "default", "threads": 0, "group_conv": "split"},
    "MindSpore graph, split GroupConv": {"kind": "mindspore", "group_conv": "split"},
    "MindSpore graph, symmetric pools": {"kind": "mindspore", "pool_padding": "symmetric"},
    "MindSpore graph, jit_level O2": {"kind": "mindspore", "jit_level": "O2", "only": "train"},
    "MindSpore graph, graph-kernel fusion": {"kind": "mindspore", "graph_kernel": True, "only": "train"},
    "MindSpore graph, 25 threads (its default)": {"kind": "mindspore", "threads": 0, "only": "train"},
    "PyTorch eager, oneDNN capped at AVX2": {"kind": "torch", "isa": FAST_ISA},
    "PyTorch eager": {"kind": "torch", "isa": "default"},
}
ALWAYS = ("MindSpore graph", "MindSpore graph, MindSpore's kernels", "MindSpore MINDIR (GraphCell)",
          "MindSpore MINDIR, BN folded", "ONNX Runtime (our ONNX export)", "ONNX Runtime, BN folded",
          "PyTorch eager")
PEER = "PyTorch eager"
#: Side of the square fp32 GEMM whose rate says how far from the machine's limit a network runs.
GEMM_SIZE = 1024


