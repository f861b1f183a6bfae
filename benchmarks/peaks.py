"""Peak throughput of the GPUs we benchmark on, to report results as a fraction of it.

Dense (no 2:4 sparsity) tensor-core TFLOP/s, the fp32 CUDA-core TFLOP/s and the
HBM bandwidth in GB/s (10^9 bytes), from NVIDIA's datasheets:
- H100 and H100 NVL: "NVIDIA H100 Tensor Core GPU" datasheet (nvidia.com/en-us/data-center/h100);
- H200 and H200 NVL: "NVIDIA H200 Tensor Core GPU" datasheet (nvidia.com/en-us/data-center/h200);
- A100: "NVIDIA A100 Tensor Core GPU" datasheet (nvidia.com/en-us/data-center/a100).
The datasheets list tensor-core rates with sparsity; the dense rate is half of it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Peak:
    fp32_tflops: float  # CUDA cores: what an fp32 matmul at "ieee" precision can reach
    tf32_tflops: float
    bf16_tflops: float
    bandwidth_gbs: float

    def tflops(self, compute: str) -> float:
        """The peak for one of "fp32", "tf32", "bf16"."""
        return {"fp32": self.fp32_tflops, "tf32": self.tf32_tflops, "bf16": self.bf16_tflops}[
            compute
        ]


# (words that must all appear in torch.cuda.get_device_name, peak); the first match
# wins, so the NVL and PCIe cards come before the names they contain.
PEAKS: list[tuple[tuple[str, ...], Peak]] = [
    (("H100", "NVL"), Peak(60.0, 417.5, 835.5, 3900.0)),
    (("H100", "PCIE"), Peak(51.0, 378.0, 756.0, 2000.0)),
    (("H100",), Peak(67.0, 494.7, 989.4, 3350.0)),  # SXM5: "NVIDIA H100 80GB HBM3"
    (("H200", "NVL"), Peak(60.0, 417.5, 835.5, 4800.0)),
    (("H200",), Peak(67.0, 494.7, 989.4, 4800.0)),
    (("A100", "80GB", "PCIE"), Peak(19.5, 156.0, 312.0, 1935.0)),
    (("A100", "80GB"), Peak(19.5, 156.0, 312.0, 2039.0)),
    (("A100",), Peak(19.5, 156.0, 312.0, 1555.0)),  # the 40 GB cards, SXM4 and PCIe
]


def peak_for(device_name: str) -> Peak | None:
    """The peak of the GPU called `device_name`, or None for a device not listed (CPUs)."""
    name = device_name.upper()
    for words, peak in PEAKS:
        if all(word in name for word in words):
            return peak
    return None
