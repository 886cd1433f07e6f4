#!/bin/bash
# Builds and runs Examples/Consumer as a separate package that depends on THPSim *by version*, the
# way a user's package would: a temporary clone of this repository's HEAD, tagged 1.0.0, is its
# dependency. SwiftPM refuses packages whose targets use unsafe flags as versioned dependencies, so
# this fails if one comes back. Usage: bash Examples/Consumer/check.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$root" "$work/thpsim"
git -C "$work/thpsim" tag 1.0.0
mkdir "$work/consumer"
cp -R "$here/Sources" "$work/consumer/"
cat > "$work/consumer/Package.swift" <<MANIFEST
// swift-tools-version: 6.0
import PackageDescription
let package = Package(
    name: "consumer",
    dependencies: [.package(url: "$work/thpsim", from: "1.0.0")],
    targets: [.executableTarget(name: "Consumer", dependencies: [.product(name: "THPSim", package: "thpsim")])]
)
MANIFEST
swift build --package-path "$work/consumer" 2>&1 | tail -3
"$work/consumer/.build/debug/Consumer"
