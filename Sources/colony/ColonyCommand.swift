import ArgumentParser
import Colony

/// The `colony` command line: the manager, tools for certificates and status.
@main
struct ColonyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "colony",
        abstract: "Python's concurrency toolbox for Swift, across machines.",
        version: colonyVersion,
        subcommands: [ManagerCommand.self, StatusCommand.self, CertsCommand.self, Info.self]
    )
}

/// `colony info`: what this machine offers the local core.
struct Info: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print the version, the CPU count and the thread core's limits.")

    @Flag(help: "Print JSON instead of text.")
    var json = false

    func run() {
        let fields: [(String, String)] = [
            ("version", colonyVersion),
            ("cpu_count", String(cpuCount())),
            ("timeout_max_seconds", String(Int(Thread.timeoutMax))),
            ("default_stack_size", String(Thread.stackSize())),
        ]
        if json {
            let body = fields.map { key, value in
                let quoted = key == "version" ? "\"\(value)\"" : value
                return "\"\(key)\": \(quoted)"
            }
            print("{" + body.joined(separator: ", ") + "}")
        } else {
            for (key, value) in fields { print("\(key): \(value)") }
        }
    }
}
