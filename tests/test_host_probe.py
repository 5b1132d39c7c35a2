from hwkd.host_probe import HostProbe


def probe_of(mcpu: str, flags: str) -> HostProbe:
    probe = HostProbe()
    probe._cpuinfo = f"processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 avx512f {flags}\n"
    probe._mcpu = mcpu
    return probe


def test_core_throughput_comes_from_the_llvm_cpu_table() -> None:
    zen4 = probe_of("znver4", "")
    assert zen4.value("cpu.fma_per_cycle")[0] == 1 and zen4.value("cpu.stores_per_cycle")[0] == 0.5
    assert "Zen 4" in zen4.value("cpu.fma_per_cycle")[1]
    unknown = probe_of("someday-core", "")
    assert unknown.value("cpu.fma_per_cycle") == (1.0, unknown.value("cpu.fma_per_cycle")[1])
    assert "not in hwkd's table" in unknown.value("cpu.fma_per_cycle")[1]
    assert zen4.value("cpu.reorder_window")[0] == 320 and unknown.value("cpu.reorder_window")[0] == 128


def test_amx_flags_mean_two_512_bit_fma_units_whatever_model_a_hypervisor_names() -> None:
    # a VM that reported Rocket Lake's model (one 512-bit FMA unit) on a core with AMX
    vm = probe_of("rocketlake", "amx_tile amx_bf16 amx_int8")
    fma, source = vm.value("cpu.fma_per_cycle")
    assert (fma, vm.value("cpu.loads_per_cycle")[0], vm.value("cpu.stores_per_cycle")[0]) == (2, 2, 1)
    assert vm.value("cpu.reorder_window")[0] == 512
    assert "amx_tile" in source and "rocketlake" in source
    assert probe_of("rocketlake", "").value("cpu.fma_per_cycle")[0] == 1.0


def test_the_clock_chain_takes_time_in_proportion_to_its_length() -> None:
    # a chain LLVM folded or ran in parallel would not: twice the cycles must take twice the time
    from hwkd import host_probe

    short, long = host_probe._chain_clock_ghz(1, 20_000_000), host_probe._chain_clock_ghz(1, 40_000_000)
    assert short is not None and long is not None
    assert 0.3 < short < 8 and 0.3 < long < 8
    assert abs(long / short - 1) < 0.15
