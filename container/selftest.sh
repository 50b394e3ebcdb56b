#!/usr/bin/env bash
# Run inside a built image (any user, read-only root filesystem, no network):
#   apptainer test cifar.sif                                   # apptainer.def's %test runs this
#   podman run --rm --network none IMAGE bash /opt/cifar-bench/container/selftest.sh   # tests/test_containers.py
#
# The one self-test of both images (so apptainer.def and the Dockerfile-built image cannot drift):
#   1. the interpreter and packages: bench, torch (version and CUDA build as in the lock), lightning;
#   2. the RDMA user-space libraries NCCL loads for InfiniBand (libibverbs, a provider, librdmacm);
#   3. one short training run of the baseline case on synthetic data, and its result JSON records
#      the image's BENCH_GIT_COMMIT and BENCH_IMAGE;
#   4. --compile works: torch.compile (inductor) builds a tiny model's C++ kernel on CPU with the
#      image's compiler (container/install.sh installs one) and it computes what eager mode does.
# Writes only under a fresh temporary folder (removed at the end). Exit status: 0 ok, 1 a check failed.
set -euo pipefail

SRC=/opt/cifar-bench
tmp=$(mktemp -d "${TMPDIR:-/tmp}/cifar-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"

echo "selftest: 1/4 packages"
python - "$SRC/requirements.lock" <<'EOF'
import re, sys
import bench, lightning, torch, torchvision
lock = open(sys.argv[1]).read()
want = re.search(r"^torch==([^\s\\;]+)", lock, re.M).group(1)
print(f"selftest: python {sys.version.split()[0]}, bench {bench.__file__}, torch {torch.__version__} "
      f"(CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, lightning {lightning.__version__}")
assert torch.__version__.split("+")[0] == want, f"torch {torch.__version__} is not the lock's {want}"
assert torch.version.cuda, "torch in the image is a CPU-only build"
assert "-packages/" in bench.__file__, f"bench imported from {bench.__file__}, not the installed package"
EOF

echo "selftest: 2/4 RDMA libraries"
python - <<'EOF'
import ctypes, glob
for lib in ("libibverbs.so.1", "librdmacm.so.1"):
    ctypes.CDLL(lib)  # OSError names the missing library
providers = sorted(glob.glob("/usr/lib/*/libibverbs/libmlx5-rdmav*.so"))
assert providers, "no mlx5 verbs provider (ibverbs-providers) in the image"
print("selftest: libibverbs.so.1, librdmacm.so.1 load; providers:", " ".join(providers))
EOF

echo "selftest: 3/4 a short baseline run"
python -m bench run --case baseline --data synthetic --preset smoke --train-samples 256 \
    --test-samples 100 --epochs 1 --out "$tmp/out"
python - "$tmp/out" <<'EOF'
import glob, json, os, sys
files = glob.glob(os.path.join(sys.argv[1], "*.json"))
assert len(files) == 1, files
result = json.load(open(files[0]))
text = json.dumps(result)
for var in ("BENCH_GIT_COMMIT", "BENCH_IMAGE"):
    assert os.environ.get(var), f"{var} is not set in the image"
assert json.dumps(os.environ["BENCH_GIT_COMMIT"]) in text, "BENCH_GIT_COMMIT is not recorded in the result JSON"
# The image as the run saw it: Apptainer's own APPTAINER_CONTAINER (the SIF's path) where it is set,
# else the name baked in (BENCH_IMAGE; bench/measure/environment.py container_facts).
image = os.environ.get("APPTAINER_CONTAINER") or os.environ["BENCH_IMAGE"]
assert result["environment"]["container_image"] == image, (result["environment"]["container_image"], image)
image_id = os.environ.get("BENCH_IMAGE_ID")  # given by the host (apptainer --env), not baked in
if image_id:
    assert result["environment"]["container_image_id"] == image_id, "BENCH_IMAGE_ID is not recorded"
print("selftest: result", os.path.basename(files[0]), "records BENCH_GIT_COMMIT and BENCH_IMAGE",
      f"and BENCH_IMAGE_ID={image_id}" if image_id else "(no BENCH_IMAGE_ID given)")
EOF
echo "selftest: 4/4 torch.compile on CPU"
TORCHINDUCTOR_CACHE_DIR="$tmp/inductor" python - <<'EOF'
import shutil, torch
cxx = shutil.which("g++") or shutil.which("c++")
assert cxx and shutil.which("cc"), "no C/C++ compiler in the image: --compile (torch.compile) cannot work"
torch.manual_seed(0)
net = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
x = torch.randn(32, 16)
compiled = torch.compile(net, backend="inductor")
torch.testing.assert_close(compiled(x), net(x))
print(f"selftest: torch.compile (inductor, {cxx}) on CPU computes what eager mode does")
EOF
echo "selftest: ok"
