// swift-tools-version: 6.0
// thpsim — an executable model of Linux's memory manager with transparent hugepages.
// Layers (ARCHITECTURE.md): VMCore ← PhysicalMemory ← Kernel ← Machine ← Workloads ← Simulation ← Scenarios, Experiments ← thpsim.
import PackageDescription

let package = Package(
    name: "thpsim",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "thpsim", targets: ["thpsim"]),
        .library(name: "THPSim", targets: ["VMCore", "PhysicalMemory", "Kernel", "Machine", "Workloads", "Simulation", "Scenarios",
                                           "Experiments"]),
        // The QEMU TCG plugin `thpsim record` loads into qemu-x86_64 (docs/trace-format.md).
        .library(name: "thpsim-qemu-capture", type: .dynamic, targets: ["QEMUCapture"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // Host instructions Swift cannot spell (streaming stores): static inline C functions for the
        // simulator's own hot tables.
        .target(name: "HostIntrinsics"),
        // The capture plugin for QEMU user mode, in C; it reaches QEMU's plugin API through dlsym.
        .target(name: "QEMUCapture", publicHeadersPath: ".",
                linkerSettings: [.linkedLibrary("dl"), .linkedLibrary("pthread")]),
        .target(name: "VMCore", dependencies: ["HostIntrinsics"]),
        .target(name: "PhysicalMemory", dependencies: ["VMCore", "HostIntrinsics"]),
        .target(name: "Kernel", dependencies: ["VMCore", "PhysicalMemory"]),
        .target(name: "Machine", dependencies: ["VMCore", "PhysicalMemory", "Kernel", "HostIntrinsics", .product(name: "Histogram", package: "hdrhistogram-swift")]),
        .target(name: "Workloads", dependencies: ["VMCore", "PhysicalMemory", "Kernel", "Machine"]),
        .target(name: "Simulation", dependencies: ["VMCore", "PhysicalMemory", "Kernel", "Machine", "Workloads"]),
        .target(name: "Scenarios", dependencies: ["VMCore", "PhysicalMemory", "Kernel", "Simulation"]),
        .target(name: "Experiments", dependencies: ["VMCore", "PhysicalMemory", "Kernel", "Machine", "Workloads", "Simulation"]),
        .executableTarget(
            name: "thpsim",
            dependencies: [
                "Kernel", "Machine", "Workloads", "Simulation", "Scenarios", "Experiments",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(name: "TestSupport", dependencies: ["VMCore", "PhysicalMemory", "Kernel"], path: "Tests/TestSupport",
                exclude: ["Fixtures"]),
        .testTarget(name: "VMCoreTests", dependencies: ["VMCore", "TestSupport"]),
        .testTarget(name: "PhysicalMemoryTests", dependencies: ["PhysicalMemory", "TestSupport"]),
        .testTarget(name: "KernelTests", dependencies: ["Kernel", "TestSupport"]),
        .testTarget(name: "WorkloadsTests", dependencies: ["Workloads", "Simulation", "Machine", "TestSupport"]),
        .testTarget(name: "SimulationTests", dependencies: ["Simulation", "Workloads", "Machine", "TestSupport"]),
        .testTarget(name: "ScenariosTests", dependencies: ["Scenarios", "Simulation", "Workloads", "TestSupport"]),
        // A hugepage policy defined outside Kernel, through its public API only.
        .testTarget(name: "PolicySeamTests", dependencies: ["VMCore", "Kernel"]),
        .testTarget(name: "MachineTests", dependencies: ["Machine", "TestSupport"]),
        .testTarget(name: "ExperimentsTests", dependencies: ["Experiments", "Scenarios", "Simulation", "Workloads", "Machine",
                                                            "Kernel", "TestSupport"]),
    ],
    swiftLanguageModes: [.v6]
)
