#!/usr/bin/env bash
# Prepare, here, what model_zoo/gpu_session.sh carries to a lent GPU machine (which
# reaches no package index): the packed training split in .pack and, in .gpu/, the
# codecs and packages the GPU image lacks. Both folders are git-ignored; run once per
# checkout, then `run` with carry [".pack", ".gpu"].
#
#   bash model_zoo/prepare_gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
site=$($PY -c "import imagecodecs, pathlib; print(pathlib.Path(imagecodecs.__file__).parent.parent)")

[ -d .pack ] || $PY -m model_zoo.datapack .pack

# imagecodecs, slimmed to its avif and jpegxl modules and the bundled libraries they load
# (the modules are abi3, so the GPU image's Python version does not matter).
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage/imagecodecs" "$stage/imagecodecs.libs" .gpu
cp "$site"/imagecodecs/*.py "$site"/imagecodecs/_shared*.so "$site"/imagecodecs/_imcd*.so \
   "$site"/imagecodecs/_avif*.so "$site"/imagecodecs/_jpegxl*.so "$stage/imagecodecs/"
for lib in $(ldd "$site"/imagecodecs/{_shared,_imcd,_avif,_jpegxl}*.so \
             | sed -n 's|.*=> .*/imagecodecs.libs/\([^ ]*\) .*|\1|p' | sort -u); do
    cp "$site/imagecodecs.libs/$lib" "$stage/imagecodecs.libs/"
done
# The wheel's libraries carry their symbol tables: stripped, the call's 64 MiB fits.
strip --strip-unneeded "$stage"/imagecodecs/*.so "$stage"/imagecodecs.libs/*
tar -C "$stage" -cf - . | xz -9 -T2 > .gpu/imagecodecs-slim.tar.xz

# Pure-Python and abi3 packages at the versions installed here; pydantic-core for the
# image's CPython 3.12.
rm -rf .gpu/wheels && mkdir -p .gpu/wheels
pins=$($PY - <<'EOF'
from importlib.metadata import version
print(" ".join(f"{n}=={version(n)}" for n in
      ("pydantic", "pydantic-core", "typing-inspection", "annotated-types", "openslide-python", "openslide-bin")))
EOF
)
# shellcheck disable=SC2086
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 -d .gpu/wheels $pins
# What a call carries: the tracked tree, untracked files and these two folders.
total=$(( $(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- | tail -1 | cut -f1)
          + $(du -sb .pack | cut -f1) + $(du -sb .gpu | cut -f1) ))
echo "a call carries $((total / 1048576)) MiB of its 64 MiB"
[ "$total" -le $((64 * 1048576)) ] || { echo "over the limit: trim .gpu or the pack" >&2; exit 1; }
