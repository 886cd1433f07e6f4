// ReplayGoldenCountsTests.swift stays byte-identical across the move of `ReplaySetup` and
// `MachineExecutor` from Workloads into Simulation; this re-export gives that file, which imports
// Workloads, the Simulation names it uses.
@_exported import Simulation
