/// The error numbers the model's system calls return, with Linux's values (`include/uapi/asm-generic/errno-base.h`).
public enum Errno: Int32, Error, Sendable, CaseIterable, CustomStringConvertible {
    case EPERM = 1
    case ENOENT = 2
    case ESRCH = 3
    case EINTR = 4
    case EAGAIN = 11
    case ENOMEM = 12
    case EACCES = 13
    case EFAULT = 14
    case EBUSY = 16
    case EEXIST = 17
    case EINVAL = 22
    case ENOSPC = 28
    case ERANGE = 34

    public var description: String { "\(name) (\(rawValue))" }
    public var name: String {
        switch self {
        case .EPERM: "EPERM"
        case .ENOENT: "ENOENT"
        case .ESRCH: "ESRCH"
        case .EINTR: "EINTR"
        case .EAGAIN: "EAGAIN"
        case .ENOMEM: "ENOMEM"
        case .EACCES: "EACCES"
        case .EFAULT: "EFAULT"
        case .EBUSY: "EBUSY"
        case .EEXIST: "EEXIST"
        case .EINVAL: "EINVAL"
        case .ENOSPC: "ENOSPC"
        case .ERANGE: "ERANGE"
        }
    }
    /// Looks up an errno by its symbolic name (`"EINVAL"`).
    public init?(name: String) {
        guard let e = Errno.allCases.first(where: { $0.name == name }) else { return nil }
        self = e
    }
}
