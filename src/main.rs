fn main() {
    std::process::exit(cardc::cli::main());
}
