// Finding the TensorRT that is loaded in this process, and registering the
// library's creators with its plugin registry when the library itself is loaded.
//
// TensorRT's own loaders (IPluginRegistry::loadLibrary, trtexec --dynamicPlugins)
// call getCreators; programs that only dlopen the library (polygraphy --plugins,
// ctypes.CDLL, the way TensorRT OSS plugin libraries are used) call nothing, so
// the library registers itself at load time. The registry comes from the
// TensorRT already in the process (getPluginRegistry, looked up with dlsym: no
// libnvinfer link), and loadLibrary later takes the creators over, so every
// creator is registered exactly once whichever way, or both ways, it is loaded.
#ifndef MHC_REGISTRATION_H
#define MHC_REGISTRATION_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>

namespace mhc
{
namespace plugin
{

// The library's creator list (getCreators' contents).
using CreatorListFn = nvinfer1::IPluginCreatorInterface* const* (*) (int32_t& nbCreators) noexcept;

// Set MHC_PLUGINS_REGISTER_ON_LOAD=0 to register only through getCreators.
constexpr char const* kREGISTER_ON_LOAD_ENV = "MHC_PLUGINS_REGISTER_ON_LOAD";

// getInferLibMajorVersion of the TensorRT in this process: the global scope
// first, then loaded TensorRT libraries (Python loads libnvinfer RTLD_LOCAL),
// then the object holding `hint`'s code (a finder TensorRT handed us).
// -1 when no TensorRT is found. *where receives the library's path if known.
int32_t runningTensorRTMajor(void const* hint, std::string* where) noexcept;

// TensorRT-RTX counts its versions from 1 and uses TensorRT 11's interfaces
// (v_1_0::ILogger/ILoggerFinder, no IPluginV2 in IPluginRegistry: the RTTI
// names in libtensorrt_rtx.so.1 1.7.1 say so). A major below 10 is RTX:
// IPluginV3 libraries load only into TensorRT 10+ or TensorRT-RTX.
bool isTensorRTRtx(int32_t runningMajor) noexcept;
int32_t interfaceMajor(int32_t runningMajor) noexcept;
// "TensorRT 10", "TensorRT-RTX 1", "an unknown TensorRT".
std::string describeTensorRT(int32_t runningMajor);

// Called once when the library is loaded.
void registerOnLoad(CreatorListFn list) noexcept;

// getCreators: undoes the load-time registration (TensorRT's loadLibrary is
// about to register the same creators under its library handle) and returns
// the list.
nvinfer1::IPluginCreatorInterface* const* handOverCreators(CreatorListFn list, int32_t& nbCreators) noexcept;

} // namespace plugin
} // namespace mhc

#endif // MHC_REGISTRATION_H
