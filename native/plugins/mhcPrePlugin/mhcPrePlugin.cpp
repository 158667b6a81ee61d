// MhcPre: residual [T,n,d] -> layer_input [T,d], post_mix [T,n], comb_mix [T,n,n]
// (contract: shared/spec/mhc_ops.md). Kernel call, plugin and creator.
#include "mhcPluginCommon.h"

#include <exception>
#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPre";

std::vector<FieldSpec> const kFIELDS = {
    {"rms_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"pre_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"sinkhorn_eps", FieldKind::kFLOAT, FieldRule::kNON_NEGATIVE_FINITE, 1e-6},
    {"post_mult", FieldKind::kFLOAT, FieldRule::kPOSITIVE_FINITE, 2.0},
    {"sinkhorn_iters", FieldKind::kINT, FieldRule::kAT_LEAST_ONE, 20},
};

// Inputs: residual, hc_fn, hc_scale, hc_base. Outputs: layer_input, post_mix, comb_mix.
constexpr int32_t kNB_IN = 4;
constexpr int32_t kNB_OUT = 3;

class MhcPrePlugin final : public MhcPlugin<MhcPrePlugin, kNB_IN, kNB_OUT, 0>
{
public:
    explicit MhcPrePlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
        mParams.rms_eps = fields.getFloat("rms_eps");
        mParams.pre_eps = fields.getFloat("pre_eps");
        mParams.sinkhorn_eps = fields.getFloat("sinkhorn_eps");
        mParams.post_mult = fields.getFloat("post_mult");
        mParams.sinkhorn_iters = fields.getInt("sinkhorn_iters");
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]))
        {
            logError(std::string(kNAME) + ": residual must be float32, float16 or bfloat16, got "
                + dataTypeName(inputTypes[0]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        outputTypes[1] = nvinfer1::DataType::kFLOAT;
        outputTypes[2] = nvinfer1::DataType::kFLOAT;
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        nvinfer1::DimsExprs const& res = inputs[0];
        if (res.nbDims != 3 || inputs[1].nbDims != 2 || inputs[2].nbDims != 1 || inputs[3].nbDims != 1)
        {
            logError(std::string(kNAME) + ": expected residual [T,n,d], hc_fn [M,K], hc_scale [3], hc_base [M]");
            return -1;
        }
        // n and d are fixed per engine by the weights; refuse a mismatch as
        // soon as both sides are known instead of reading out of bounds later.
        if (res.d[1]->isConstant() && res.d[2]->isConstant() && inputs[1].d[0]->isConstant()
            && inputs[1].d[1]->isConstant())
        {
            int64_t const n = res.d[1]->getConstantValue();
            int64_t const d = res.d[2]->getConstantValue();
            int64_t const m = inputs[1].d[0]->getConstantValue();
            int64_t const k = inputs[1].d[1]->getConstantValue();
            if (m != (2 + n) * n || k != n * d)
            {
                logError(std::string(kNAME) + ": hc_fn is [" + std::to_string(m) + ", " + std::to_string(k)
                    + "], expected [(2+n)*n, n*d] = [" + std::to_string((2 + n) * n) + ", " + std::to_string(n * d)
                    + "] for residual n=" + std::to_string(n) + ", d=" + std::to_string(d));
                return -1;
            }
        }
        outputs[0].nbDims = 2;
        outputs[0].d[0] = res.d[0];
        outputs[0].d[1] = res.d[2];
        outputs[1].nbDims = 2;
        outputs[1].d[0] = res.d[0];
        outputs[1].d[1] = res.d[1];
        outputs[2].nbDims = 3;
        outputs[2].d[0] = res.d[0];
        outputs[2].d[1] = res.d[1];
        outputs[2].d[2] = res.d[1];
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
        if (t.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        switch (pos)
        {
        case 0: return isResidualType(t.type);
        case 4: return t.type == inOut[0].desc.type; // layer_input follows residual
        default: return t.type == nvinfer1::DataType::kFLOAT;
        }
    }

    size_t workspaceSize(int64_t t, int32_t n, int32_t d, mhcDtype_t dtype) const noexcept override
    {
        return mhcPreWorkspaceSize(t, n, d, dtype);
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        mhcStatus_t const st = mhcPre(c.inputs[0], static_cast<float const*>(c.inputs[1]),
            static_cast<float const*>(c.inputs[2]), static_cast<float const*>(c.inputs[3]), c.outputs[0],
            static_cast<float*>(c.outputs[1]), static_cast<float*>(c.outputs[2]), c.t, c.n, c.d, c.dtype, &mParams,
            c.workspace, workspaceSize(c.t, c.n, c.d, c.dtype), c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPre", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }

    mhcPreParams mParams{};
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPreCreator() noexcept
{
    static MhcCreator<MhcPrePlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
