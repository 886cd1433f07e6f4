// swift-tools-version: 6.1
// Benchmarks live in their own package (like swift-nio's), so the main package needs no benchmark
// dependency. Run: `cd Benchmarks && swift package --allow-writing-to-package-directory benchmark`.
import PackageDescription

let package = Package(
    name: "thpsim-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "thpsim", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.0", traits: ["MallocInterposer"]),
    ],
    targets: [
        // The fault loops in a plain program (no benchmark framework), for A/B work and profiling.
        .executableTarget(
            name: "PlainLoops",
            dependencies: [.product(name: "THPSim", package: "thpsim")],
            path: "Benchmarks/PlainLoops"
        ),
        .executableTarget(
            name: "FaultBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "THPSim", package: "thpsim"),
            ],
            path: "Benchmarks/FaultBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "MachineBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "THPSim", package: "thpsim"),
            ],
            path: "Benchmarks/MachineBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "KhugepagedBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "THPSim", package: "thpsim"),
            ],
            path: "Benchmarks/KhugepagedBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "ReplayBenchmarks",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "THPSim", package: "thpsim"),
            ],
            path: "Benchmarks/ReplayBenchmarks",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ]
)
