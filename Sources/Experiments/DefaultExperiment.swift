import Kernel

/// The experiment `thpsim run` runs without arguments: the classic THP trade-off in about a minute
/// (release build, 2 cores). GUPS over 4 GiB, a program that asks for huge pages with MADV_HUGEPAGE,
/// is where huge pages pay (TLB reach) and where `madvise` acts; the malloc-like
/// heap is where they bloat (sparse touching) and rarely come at fault; the fork-and-write server is
/// where they cost (a write to a shared huge page copies 2 MiB in 2010; today it splits the PMD and
/// copies 4 KiB). Each under never, madvise, always, in both designs.
public enum DefaultExperiment {
    public static var grid: ExperimentGrid {
        ExperimentGrid(workloads: [
            .synthetic("gups", size: 4 << 30, accesses: 20_000_000, advise: true),
            .synthetic("heap", size: 1 << 30, accesses: 4_000_000),
            .synthetic("forkserver", size: 1 << 30, accesses: 8_000_000),
        ], designs: KernelDesign.all.map(\.name))
    }
}
