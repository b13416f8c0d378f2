import ArgumentParser
import CMemoryMapShim
import Colony
import ColonyWorker

/// The `colony` command line: the manager, worker nodes, tools for certificates and status.
@main
struct ColonyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "colony",
        abstract: "Python's concurrency toolbox for Swift, across machines.",
        version: colonyVersion,
        subcommands: [ManagerCommand.self, WorkerCommand.self, StatusCommand.self, CertsCommand.self, Info.self]
    )

    static func main() async {
        colony_keep_freed_memory()
        // `colony worker`'s child processes are this program started again: they run their
        // loop here and exit before any argument is parsed.
        do {
            try WorkerNode.bootstrap(registry: .stock)
        } catch {
            exit(withError: error)
        }
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? any AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
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
