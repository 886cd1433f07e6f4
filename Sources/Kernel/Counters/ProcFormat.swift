/// Linux's `/proc` number layout: a name padded to 16 columns, a value right-aligned in 8, then a unit
/// (Linux: `show_val_kb()` in `fs/proc/meminfo.c`, `SEQ_PUT_DEC` in `fs/proc/task_mmu.c`).
enum ProcFormat {
    static func line(_ name: String, _ value: UInt64, unit: String? = "kB") -> String {
        let label = name + ":"
        let padded = label.count >= 16 ? label : label + String(repeating: " ", count: 16 - label.count)
        let number = String(value)
        let aligned = number.count >= 8 ? number : String(repeating: " ", count: 8 - number.count) + number
        return padded + aligned + (unit.map { " " + $0 } ?? "")
    }

    static func hex(_ value: UInt64, width: Int = 0) -> String {
        let s = String(value, radix: 16)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
