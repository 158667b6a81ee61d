// Minimal C++ embedding of an mHC TensorRT engine: load the plugin library,
// deserialize the engine, set the token count, run on .npy or random inputs,
// print the outputs and the time per run.
//
//   mhc_infer --engine model.plan --plugins libmhc_trt_plugins_trt11.so [--tokens T]
//             [--input name=file.npy]... [--save DIR] [--warmup 10] [--iters 100]
//
// Inputs not given as .npy are filled with random values: normal for
// activations, small normal for weights. .npy files must be little-endian
// float32 (<f4), float16 (<f2), or bfloat16 stored as uint16 (<u2) or a
// 2-byte void type (|V2), C order, with the engine's shape for that T.
#include <NvInferRuntime.h>
#include <NvInferVersion.h>

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace
{
class Logger : public nvinfer1::ILogger
{
public:
    void log(Severity severity, char const* msg) noexcept override
    {
        if (severity <= Severity::kWARNING)
        {
            std::cerr << "[TensorRT] " << msg << "\n";
        }
    }
};

[[noreturn]] void die(std::string const& msg)
{
    std::cerr << "error: " << msg << "\n";
    std::exit(1);
}

// Exits on a CUDA error, naming the call (CHECK_CUDA passes its text).
void checkCuda(cudaError_t status, char const* call)
{
    if (status != cudaSuccess)
    {
        die(std::string(call) + " failed: " + cudaGetErrorString(status));
    }
}
#define CHECK_CUDA(call) checkCuda((call), #call)

size_t elementSize(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT:
    case nvinfer1::DataType::kINT32: return 4;
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16: return 2;
    case nvinfer1::DataType::kINT64: return 8;
    default: return 1;
    }
}

char const* npyDescr(nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT: return "<f4";
    case nvinfer1::DataType::kHALF: return "<f2";
    case nvinfer1::DataType::kBF16: return "<u2"; // numpy has no bfloat16: raw bits
    case nvinfer1::DataType::kINT32: return "<i4";
    case nvinfer1::DataType::kINT64: return "<i8";
    default: return "|u1";
    }
}

int64_t volume(nvinfer1::Dims const& d)
{
    int64_t v = 1;
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        v *= d.d[i];
    }
    return v;
}

std::string shapeStr(nvinfer1::Dims const& d)
{
    std::string s = "(";
    for (int32_t i = 0; i < d.nbDims; ++i)
    {
        s += std::to_string(d.d[i]) + (d.nbDims == 1 || i + 1 < d.nbDims ? "," : "");
    }
    return s + ")";
}

// float <-> half / bfloat16 on the host, round to nearest even.
uint16_t toBf16(float f)
{
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if (std::isnan(f))
    {
        return 0x7FC0;
    }
    u += 0x7FFF + ((u >> 16) & 1);
    return static_cast<uint16_t>(u >> 16);
}

float fromBf16(uint16_t h)
{
    uint32_t u = static_cast<uint32_t>(h) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

uint16_t toHalf(float f)
{
    uint32_t x;
    std::memcpy(&x, &f, 4);
    uint32_t const sign = (x >> 16) & 0x8000;
    int32_t exp = static_cast<int32_t>((x >> 23) & 0xFF) - 127 + 15;
    uint32_t mant = x & 0x7FFFFF;
    if (((x >> 23) & 0xFF) == 0xFF)
    {
        return static_cast<uint16_t>(sign | 0x7C00 | (mant ? 0x200 : 0));
    }
    if (exp >= 31)
    {
        return static_cast<uint16_t>(sign | 0x7C00);
    }
    if (exp <= 0)
    {
        if (exp < -10)
        {
            return static_cast<uint16_t>(sign);
        }
        mant |= 0x800000;
        uint32_t const shift = static_cast<uint32_t>(14 - exp);
        uint32_t h = mant >> shift;
        uint32_t const rem = mant & ((1U << shift) - 1);
        uint32_t const half = 1U << (shift - 1);
        h += (rem > half || (rem == half && (h & 1)));
        return static_cast<uint16_t>(sign | h);
    }
    uint32_t h = (static_cast<uint32_t>(exp) << 10) | (mant >> 13);
    uint32_t const rem = mant & 0x1FFF;
    h += (rem > 0x1000 || (rem == 0x1000 && (h & 1)));
    return static_cast<uint16_t>(sign | h);
}

float fromHalf(uint16_t h)
{
    uint32_t const sign = (h & 0x8000U) << 16;
    uint32_t exp = (h >> 10) & 0x1F;
    uint32_t mant = h & 0x3FF;
    uint32_t bits;
    if (exp == 0)
    {
        if (mant == 0)
        {
            bits = sign;
        }
        else
        {
            exp = 127 - 15 + 1;
            while (!(mant & 0x400))
            {
                mant <<= 1;
                --exp;
            }
            bits = sign | (exp << 23) | ((mant & 0x3FF) << 13);
        }
    }
    else if (exp == 31)
    {
        bits = sign | 0x7F800000 | (mant << 13);
    }
    else
    {
        bits = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

float toFloat(std::vector<uint8_t> const& buf, size_t i, nvinfer1::DataType t)
{
    switch (t)
    {
    case nvinfer1::DataType::kFLOAT:
    {
        float f;
        std::memcpy(&f, buf.data() + 4 * i, 4);
        return f;
    }
    case nvinfer1::DataType::kHALF:
    case nvinfer1::DataType::kBF16:
    {
        uint16_t h;
        std::memcpy(&h, buf.data() + 2 * i, 2);
        return t == nvinfer1::DataType::kHALF ? fromHalf(h) : fromBf16(h);
    }
    default: return 0.F;
    }
}

// Reads a C-order .npy file; returns its payload and checks descr and shape.
std::vector<uint8_t> readNpy(std::string const& path, nvinfer1::DataType type, nvinfer1::Dims const& shape)
{
    std::ifstream f(path, std::ios::binary);
    if (!f)
    {
        die("cannot open " + path);
    }
    char magic[8];
    f.read(magic, 8);
    if (!f || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    {
        die(path + " is not a .npy file");
    }
    uint32_t headerLen = 0;
    if (magic[6] == 1)
    {
        uint16_t h;
        f.read(reinterpret_cast<char*>(&h), 2);
        headerLen = h;
    }
    else
    {
        f.read(reinterpret_cast<char*>(&headerLen), 4);
    }
    std::string header(headerLen, '\0');
    f.read(&header[0], headerLen);
    if (header.find("'fortran_order': False") == std::string::npos)
    {
        die(path + ": only C-order arrays are supported");
    }
    size_t const d0 = header.find("'descr': '") + 10;
    std::string const descr = header.substr(d0, header.find('\'', d0) - d0);
    bool const descrOk = descr == npyDescr(type)
        || (type == nvinfer1::DataType::kBF16 && (descr == "<i2" || descr == "|V2" || descr == "<V2"));
    if (!descrOk)
    {
        die(path + ": dtype " + descr + " does not match the engine's " + npyDescr(type));
    }
    size_t const s0 = header.find("'shape': (") + 10;
    std::string const shp = header.substr(s0, header.find(')', s0) - s0);
    std::vector<int64_t> dims;
    std::stringstream ss(shp);
    std::string item;
    while (std::getline(ss, item, ','))
    {
        if (item.find_first_of("0123456789") != std::string::npos)
        {
            dims.push_back(std::stoll(item));
        }
    }
    bool same = static_cast<int32_t>(dims.size()) == shape.nbDims;
    for (int32_t i = 0; same && i < shape.nbDims; ++i)
    {
        same = dims[i] == shape.d[i];
    }
    if (!same)
    {
        die(path + ": shape (" + shp + ") does not match the engine's " + shapeStr(shape));
    }
    std::vector<uint8_t> data(static_cast<size_t>(volume(shape)) * elementSize(type));
    f.read(reinterpret_cast<char*>(data.data()), static_cast<std::streamsize>(data.size()));
    if (!f)
    {
        die(path + ": file too short");
    }
    return data;
}

void writeNpy(std::string const& path, std::vector<uint8_t> const& data, nvinfer1::DataType type,
    nvinfer1::Dims const& shape)
{
    std::string header = std::string("{'descr': '") + npyDescr(type) + "', 'fortran_order': False, 'shape': "
        + shapeStr(shape) + ", }";
    size_t const total = 10 + header.size() + 1;
    header.append((64 - total % 64) % 64, ' ');
    header.push_back('\n');
    std::ofstream f(path, std::ios::binary);
    f.write("\x93NUMPY\x01\x00", 8);
    uint16_t const len = static_cast<uint16_t>(header.size());
    f.write(reinterpret_cast<char const*>(&len), 2);
    f << header;
    f.write(reinterpret_cast<char const*>(data.data()), static_cast<std::streamsize>(data.size()));
}

std::vector<uint8_t> randomTensor(nvinfer1::DataType type, int64_t count, float scale, std::mt19937& rng)
{
    std::normal_distribution<float> dist(0.F, scale);
    std::vector<uint8_t> data(static_cast<size_t>(count) * elementSize(type));
    for (int64_t i = 0; i < count; ++i)
    {
        float const v = dist(rng);
        if (type == nvinfer1::DataType::kFLOAT)
        {
            std::memcpy(data.data() + 4 * i, &v, 4);
        }
        else if (type == nvinfer1::DataType::kHALF || type == nvinfer1::DataType::kBF16)
        {
            uint16_t const h = type == nvinfer1::DataType::kHALF ? toHalf(v) : toBf16(v);
            std::memcpy(data.data() + 2 * i, &h, 2);
        }
    }
    return data;
}

std::vector<char> readFile(std::string const& path)
{
    std::ifstream f(path, std::ios::binary | std::ios::ate);
    if (!f)
    {
        die("cannot open " + path);
    }
    std::vector<char> buf(static_cast<size_t>(f.tellg()));
    f.seekg(0);
    f.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    return buf;
}
} // namespace

int main(int argc, char** argv)
{
    std::string enginePath, pluginPath, saveDir;
    int64_t tokens = 8;
    int warmup = 10, iters = 100;
    std::map<std::string, std::string> npyInputs;
    for (int i = 1; i < argc; ++i)
    {
        std::string const a = argv[i];
        auto next = [&]() -> std::string {
            if (i + 1 >= argc)
            {
                die("missing value after " + a);
            }
            return argv[++i];
        };
        if (a == "--engine")
            enginePath = next();
        else if (a == "--plugins")
            pluginPath = next();
        else if (a == "--tokens")
            tokens = std::stoll(next());
        else if (a == "--save")
            saveDir = next();
        else if (a == "--warmup")
            warmup = std::stoi(next());
        else if (a == "--iters")
            iters = std::stoi(next());
        else if (a == "--input")
        {
            std::string const kv = next();
            size_t const eq = kv.find('=');
            if (eq == std::string::npos)
                die("--input expects name=file.npy");
            npyInputs[kv.substr(0, eq)] = kv.substr(eq + 1);
        }
        else
        {
            std::cerr << "usage: mhc_infer --engine F.plan [--plugins libmhc_trt_plugins_trt11.so] [--tokens T]\n"
                         "                 [--input name=file.npy]... [--save DIR] [--warmup N] [--iters N]\n";
            return 2;
        }
    }
    if (enginePath.empty())
        die("--engine is required");

    Logger logger;
    std::unique_ptr<nvinfer1::IRuntime> runtime{nvinfer1::createInferRuntime(logger)};
    if (!runtime)
        die("createInferRuntime failed");
    // The engine's plugin layers are recreated from the library's creators
    // during deserialization, so the library must be registered first.
    if (!pluginPath.empty() && runtime->getPluginRegistry().loadLibrary(pluginPath.c_str()) == nullptr)
        die("IPluginRegistry::loadLibrary(" + pluginPath + ") failed");

    std::vector<char> const blob = readFile(enginePath);
    std::unique_ptr<nvinfer1::ICudaEngine> engine{runtime->deserializeCudaEngine(blob.data(), blob.size())};
    if (!engine)
        die("deserializeCudaEngine failed (plugin library loaded? same TensorRT version and GPU?)");
    std::unique_ptr<nvinfer1::IExecutionContext> context{engine->createExecutionContext()};
    if (!context)
        die("createExecutionContext failed");

    std::mt19937 rng(1234);
    struct Binding
    {
        std::string name;
        nvinfer1::DataType type;
        nvinfer1::Dims shape;
        void* device{nullptr};
        size_t bytes{0};
    };
    std::vector<Binding> inputs, outputs;
    int32_t const nbIO = engine->getNbIOTensors();
    for (int32_t i = 0; i < nbIO; ++i)
    {
        char const* name = engine->getIOTensorName(i);
        Binding b{name, engine->getTensorDataType(name), engine->getTensorShape(name)};
        if (engine->getTensorIOMode(name) != nvinfer1::TensorIOMode::kINPUT)
        {
            outputs.push_back(b);
            continue;
        }
        // Only the token dimension is dynamic in the exported models.
        for (int32_t k = 0; k < b.shape.nbDims; ++k)
        {
            if (b.shape.d[k] < 0)
                b.shape.d[k] = tokens;
        }
        if (!context->setInputShape(name, b.shape))
            die(std::string("setInputShape failed for ") + name + " " + shapeStr(b.shape)
                + " (outside the engine's optimization profile?)");
        std::vector<uint8_t> host;
        if (npyInputs.count(name))
            host = readNpy(npyInputs[name], b.type, b.shape);
        else
        {
            // Weights (no dynamic dim) small, activations unit scale.
            bool const isWeight = engine->getTensorShape(name).d[0] >= 0;
            host = randomTensor(b.type, volume(b.shape), isWeight ? 0.05F : 1.F, rng);
        }
        b.bytes = host.size();
        CHECK_CUDA(cudaMalloc(&b.device, std::max<size_t>(b.bytes, 1)));
        CHECK_CUDA(cudaMemcpy(b.device, host.data(), b.bytes, cudaMemcpyHostToDevice));
        context->setTensorAddress(name, b.device);
        inputs.push_back(b);
        std::cout << "input  " << name << " " << shapeStr(b.shape) << (npyInputs.count(name) ? " from .npy" : " random")
                  << "\n";
    }
    for (auto& b : outputs)
    {
        b.shape = context->getTensorShape(b.name.c_str());
        b.bytes = static_cast<size_t>(volume(b.shape)) * elementSize(b.type);
        CHECK_CUDA(cudaMalloc(&b.device, std::max<size_t>(b.bytes, 1)));
        context->setTensorAddress(b.name.c_str(), b.device);
    }

    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreate(&stream));
    for (int i = 0; i < std::max(warmup, 1); ++i)
    {
        if (!context->enqueueV3(stream))
            die("enqueueV3 failed");
    }
    CHECK_CUDA(cudaStreamSynchronize(stream));
    cudaEvent_t start, stop;
    CHECK_CUDA(cudaEventCreate(&start));
    CHECK_CUDA(cudaEventCreate(&stop));
    std::vector<float> times;
    for (int i = 0; i < iters; ++i)
    {
        CHECK_CUDA(cudaEventRecord(start, stream));
        context->enqueueV3(stream);
        CHECK_CUDA(cudaEventRecord(stop, stream));
        CHECK_CUDA(cudaEventSynchronize(stop));
        float ms = 0.F;
        CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
        times.push_back(ms);
    }
    if (!times.empty())
    {
        std::sort(times.begin(), times.end());
        std::printf("time per run (T=%lld): median %.4f ms, min %.4f ms over %d runs\n",
            static_cast<long long>(tokens), times[times.size() / 2], times.front(), iters);
    }

    for (auto const& b : outputs)
    {
        std::vector<uint8_t> host(b.bytes);
        CHECK_CUDA(cudaMemcpy(host.data(), b.device, b.bytes, cudaMemcpyDeviceToHost));
        size_t const n = b.bytes / elementSize(b.type);
        double sum = 0, sumAbs = 0;
        size_t nonFinite = 0;
        for (size_t i = 0; i < n; ++i)
        {
            float const v = toFloat(host, i, b.type);
            if (!std::isfinite(v))
            {
                ++nonFinite;
                continue;
            }
            sum += v;
            sumAbs += std::fabs(v);
        }
        std::printf("output %s %s: mean %.6g, mean|x| %.6g, non-finite %zu; first:", b.name.c_str(),
            shapeStr(b.shape).c_str(), n ? sum / n : 0.0, n ? sumAbs / n : 0.0, nonFinite);
        for (size_t i = 0; i < std::min<size_t>(n, 6); ++i)
        {
            std::printf(" %.6g", toFloat(host, i, b.type));
        }
        std::printf("\n");
        if (!saveDir.empty())
        {
            writeNpy(saveDir + "/" + b.name + ".npy", host, b.type, b.shape);
        }
    }
    for (auto& b : inputs)
        cudaFree(b.device);
    for (auto& b : outputs)
        cudaFree(b.device);
    cudaStreamDestroy(stream);
    return 0;
}
